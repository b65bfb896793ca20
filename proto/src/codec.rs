//! The codec of every generated `quarry.v1` client and server
//! ([`CheckedCodec`], set by `build.rs` with tonic-prost-build's
//! `codec_path`): prost encoding, and a decoder that refuses hostile
//! requests before any handler sees them, so no RPC can forget to.
//!
//! Decoding a request message (the input type of some `quarry.v1` method):
//! - a protobuf decode failure (a truncated message, invalid UTF-8 in a
//!   string field, a bad wire type) is `INVALID_ARGUMENT` reading
//!   `invalid request: <prost's error>`; prost's text names the field, e.g.
//!   `AskRequest.question: invalid string value: data is not UTF-8 encoded`
//!   (tonic's own codec makes it `INTERNAL`);
//! - a string holding U+0000 anywhere (nested messages, repeated fields,
//!   map keys and values, oneofs, well-known types) is `INVALID_ARGUMENT`
//!   with a google.rpc `BadRequest` field violation naming the field path
//!   in protobuf field names, e.g. `question` or
//!   `filter.and.filters[1].eq.value.text_value` ([`crate::status::bad_request`]).
//!   PostgreSQL `text` cannot hold NUL, so such a request could otherwise be
//!   answered and then fail to be stored.
//!
//! The NUL check costs one `memchr` over the message when it has no 0x00
//! byte, which is the usual case: a NUL in a string is a 0x00 byte in the
//! encoding. Only a message with a 0x00 byte (a NUL, or a zero length,
//! varint or fixed-width byte) is decoded a second time, reflectively with
//! `prost-reflect` against [`crate::FILE_DESCRIPTOR_SET`], and its strings
//! walked. Reflection over the descriptor set the crate already embeds was
//! chosen over a generated trait (one `impl` per message from `build.rs`):
//! it covers every field kind with no code generation of ours to keep in
//! step with prost's, and the slow path is rare.
//!
//! Decoding a response (a client reading what the server sent) behaves as
//! tonic's codec does: a decode failure is `INTERNAL`, with no NUL check,
//! since the caller did nothing wrong. Which messages are requests comes
//! from the service descriptors; `buf lint` (`RPC_REQUEST_RESPONSE_UNIQUE`)
//! keeps a type from being both. Health and reflection keep their own
//! codecs.

use std::{collections::HashSet, marker::PhantomData, sync::LazyLock};

use bytes::Buf as _;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Description of the field violation for a string holding U+0000.
pub const NUL_DESCRIPTION: &str = "must not contain a NUL character (U+0000)";

/// `tonic_prost::ProstCodec` with a checked decoder ([module docs](self)).
/// `T` is the type encoded, `U` the type decoded.
#[derive(Debug, Clone)]
pub struct CheckedCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for CheckedCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::new(),
        }
    }
}

impl<T, U> Codec for CheckedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder {
            _message: PhantomData,
        }
    }
}

/// The decoder of [`CheckedCodec`].
#[derive(Debug, Clone)]
pub struct CheckedDecoder<U> {
    _message: PhantomData<fn() -> U>,
}

impl<U: Message + Name + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Zero-copy: tonic's buffer is one `BytesMut`.
        let bytes = buf.copy_to_bytes(buf.remaining());
        decode_checked(&bytes).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes `bytes` as a `U`, checked as the [module docs](self) say.
///
/// # Errors
/// `INVALID_ARGUMENT` for a request that does not decode or holds a NUL in a
/// string; `INTERNAL` for a response that does not decode, or when the
/// embedded descriptor set is unusable (a build defect).
pub fn decode_checked<U: Message + Name + Default>(bytes: &[u8]) -> Result<U, Status> {
    let message = U::decode(bytes).map_err(|error| {
        match reflection().map(|r| r.is_request(&U::full_name())) {
            Ok(true) => Status::invalid_argument(format!("invalid request: {error}")),
            Ok(false) => Status::internal(error.to_string()),
            Err(status) => status,
        }
    })?;
    if memchr::memchr(0, bytes).is_some() {
        let reflection = reflection()?;
        let name = U::full_name();
        if reflection.is_request(&name)
            && let Some(path) = reflection.nul_field(&name, bytes)?
        {
            return Err(crate::status::bad_request(&path, NUL_DESCRIPTION));
        }
    }
    Ok(message)
}

/// The descriptor pool of `quarry.v1` and which of its messages are requests.
struct Reflection {
    pool: DescriptorPool,
    requests: HashSet<String>,
}

impl Reflection {
    fn new() -> Result<Self, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)?;
        let requests = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| method.input().full_name().to_owned())
            .collect();
        Ok(Self { pool, requests })
    }

    fn is_request(&self, full_name: &str) -> bool {
        self.requests.contains(full_name)
    }

    /// The path of the first string field of message `full_name`, encoded
    /// as `bytes`, that holds U+0000.
    fn nul_field(&self, full_name: &str, bytes: &[u8]) -> Result<Option<String>, Status> {
        #[cfg(test)]
        tests::count_walk();
        let descriptor = self
            .pool
            .get_message_by_name(full_name)
            .ok_or_else(|| Status::internal(format!("no descriptor for {full_name}")))?;
        let message = DynamicMessage::decode(descriptor, bytes)
            .map_err(|error| Status::invalid_argument(format!("invalid request: {error}")))?;
        Ok(nul_in_message(&message, ""))
    }
}

/// The embedded `quarry.v1` descriptors, decoded once.
fn reflection() -> Result<&'static Reflection, Status> {
    static REFLECTION: LazyLock<Result<Reflection, String>> =
        LazyLock::new(|| Reflection::new().map_err(|error| error.to_string()));
    REFLECTION
        .as_ref()
        .map_err(|error| Status::internal(format!("quarry.v1 descriptor set: {error}")))
}

fn nul_in_message(message: &DynamicMessage, prefix: &str) -> Option<String> {
    message.fields().find_map(|(field, value)| {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        nul_in_value(value, path)
    })
}

fn nul_in_value(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then_some(path),
        Value::Message(message) => nul_in_message(message, &path),
        Value::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in_value(item, format!("{path}[{i}]"))),
        Value::Map(entries) => {
            // Sorted, so the same request always names the same entry.
            let mut entries: Vec<_> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            entries.into_iter().find_map(|(key, item)| {
                let at = match key {
                    MapKey::String(key) if key.contains('\0') => {
                        return Some(format!("{path}[{key:?}]"));
                    }
                    MapKey::String(key) => format!("{path}[{key:?}]"),
                    MapKey::Bool(key) => format!("{path}[{key}]"),
                    MapKey::I32(key) => format!("{path}[{key}]"),
                    MapKey::I64(key) => format!("{path}[{key}]"),
                    MapKey::U32(key) => format!("{path}[{key}]"),
                    MapKey::U64(key) => format!("{path}[{key}]"),
                };
                nul_in_value(item, at)
            })
        }
        Value::Bool(_)
        | Value::I32(_)
        | Value::I64(_)
        | Value::U32(_)
        | Value::U64(_)
        | Value::F32(_)
        | Value::F64(_)
        | Value::Bytes(_)
        | Value::EnumNumber(_) => None,
    }
}

#[cfg(test)]
mod tests;
