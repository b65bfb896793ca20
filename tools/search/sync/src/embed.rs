//! Embedding of pending documents, cached by content hash.

use std::collections::{HashMap, HashSet};

use pgvector::Vector;
use quarry_db::quote_ident;
use quarry_search::collection::{content_hash, hash_column, vector_column};

use crate::config::SyncConfig;
use crate::syncer::Syncer;
use crate::{Result, SyncError};

/// What [`Syncer::embed_pending`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbedReport {
    /// Documents whose vectors were brought up to date.
    pub docs: u64,
    /// Distinct texts sent to the embedder.
    pub embedded_texts: u64,
    /// Field values given a vector some document already had for the same
    /// text (no model call).
    pub reused: u64,
    /// Field values whose text had not changed since their vector was made.
    pub unchanged: u64,
    /// Documents read whose write was skipped because the document changed
    /// meanwhile (they stay pending and come round again).
    pub superseded: u64,
}

impl EmbedReport {
    fn add(&mut self, other: EmbedReport) {
        self.docs += other.docs;
        self.embedded_texts += other.embedded_texts;
        self.reused += other.reused;
        self.unchanged += other.unchanged;
        self.superseded += other.superseded;
    }
}

/// What one text field of one pending document needs.
enum Need {
    /// The vector matches the text already.
    Keep,
    /// No text: hash and vector become NULL.
    Clear,
    /// A vector for this content hash.
    Vector(Vec<u8>),
}

impl Syncer {
    /// Brings the vectors of pending documents (`NOT embedded AND NOT
    /// deleted`) up to date, in version order, in rounds of
    /// [`SyncConfig::embed_batch`] documents, until none is pending (or a
    /// round makes no progress). Per text field: unchanged text (its
    /// `h_<field>` equals [`content_hash`] of the text) is skipped; a hash
    /// any document already has a vector for reuses that vector; the rest
    /// is embedded once per distinct text, shortest first to cut padding.
    /// Vectors are written with `embedded = true` only where the document's
    /// version is still the one read, so a concurrent update wins; writing
    /// vectors never changes `version`. Empty text gets a NULL vector.
    /// Without an embedder this does nothing.
    ///
    /// Cancellation-safe: every round is one `UPDATE`.
    ///
    /// # Errors
    /// [`SyncError::Embedding`] / [`SyncError::EmbeddingShape`] from the
    /// embedder; database errors. Rounds finished before stay written.
    pub async fn embed_pending(&self) -> Result<EmbedReport> {
        let mut total = EmbedReport::default();
        if self.inner.embedder.is_none() {
            return Ok(total);
        }
        loop {
            let (read, report) = self.embed_round().await?;
            total.add(report);
            if read == 0 || report.docs == 0 {
                return Ok(total);
            }
        }
    }

    /// One round; returns the documents read and what was done.
    async fn embed_round(&self) -> Result<(usize, EmbedReport)> {
        let mut report = EmbedReport::default();
        let Some(embedder) = self.inner.embedder.clone() else {
            return Ok((0, report));
        };
        let collection = self.inner.collection.clone();
        let statements = self.statements().await?;
        let client = self.inner.pool.get().await?;
        let batch = SyncConfig::limit(self.inner.config.embed_batch);
        let rows = client.query(&statements.pending, &[&batch]).await?;
        if rows.is_empty() {
            return Ok((0, report));
        }
        let fields = collection.text.len();
        let mut keys = Vec::with_capacity(rows.len());
        let mut versions = Vec::with_capacity(rows.len());
        // needs[field][row]
        let mut needs: Vec<Vec<Need>> = (0..fields).map(|_| Vec::new()).collect();
        let mut wanted: HashMap<Vec<u8>, String> = HashMap::new();
        for row in &rows {
            keys.push(row.get::<_, String>(0));
            versions.push(row.get::<_, i64>(1));
            for (f, column) in needs.iter_mut().enumerate() {
                let text: Option<String> = row.get(2 + 3 * f);
                let hash: Option<Vec<u8>> = row.get(3 + 3 * f);
                let has_vector: bool = row.get(4 + 3 * f);
                let need = match text {
                    None => {
                        if hash.is_none() && !has_vector {
                            Need::Keep
                        } else {
                            Need::Clear
                        }
                    }
                    Some(text) => {
                        let h = content_hash(&text);
                        if has_vector && hash.as_deref() == Some(h.as_slice()) {
                            report.unchanged += 1;
                            Need::Keep
                        } else {
                            wanted.entry(h.clone()).or_insert(text);
                            Need::Vector(h)
                        }
                    }
                };
                column.push(need);
            }
        }

        // Vectors some document already has, from any text field (one model).
        let mut vectors: HashMap<Vec<u8>, Vector> = HashMap::new();
        if !wanted.is_empty() {
            let hashes: Vec<&Vec<u8>> = wanted.keys().collect();
            for field in &collection.text {
                let h = quote_ident(&hash_column(&field.name));
                let v = quote_ident(&vector_column(&field.name));
                let found = client
                    .query(
                        &format!(
                            "SELECT DISTINCT ON ({h}) {h}, {v} FROM {} \
                             WHERE {h} = ANY($1) AND {v} IS NOT NULL",
                            collection.docs_table()
                        ),
                        &[&hashes],
                    )
                    .await?;
                for row in found {
                    vectors
                        .entry(row.get::<_, Vec<u8>>(0))
                        .or_insert_with(|| row.get(1));
                }
            }
        }
        let mut missing: Vec<(&Vec<u8>, &String)> = wanted
            .iter()
            .filter(|(h, _)| !vectors.contains_key(*h))
            .collect();
        missing.sort_by_key(|(_, text)| text.len());
        let fresh: HashSet<&Vec<u8>> = missing.iter().map(|(h, _)| *h).collect();
        let dimension = embedder.dimension();
        for chunk in missing.chunks(self.inner.config.embed_batch.max(1)) {
            let texts: Vec<String> = chunk.iter().map(|(_, t)| (*t).clone()).collect();
            let embedded = embedder.embed_background(texts).await?;
            if embedded.len() != chunk.len() {
                return Err(SyncError::EmbeddingShape {
                    expected: chunk.len(),
                    dimension,
                    got: format!("{} vectors", embedded.len()),
                });
            }
            for ((hash, _), vector) in chunk.iter().zip(embedded) {
                if vector.len() != dimension {
                    return Err(SyncError::EmbeddingShape {
                        expected: chunk.len(),
                        dimension,
                        got: format!("a vector of {} dims", vector.len()),
                    });
                }
                vectors.insert((*hash).clone(), Vector::from(vector));
            }
            report.embedded_texts += chunk.len() as u64;
        }

        let mut keep_arrays = Vec::with_capacity(fields);
        let mut hash_arrays = Vec::with_capacity(fields);
        let mut vector_arrays = Vec::with_capacity(fields);
        for column in &needs {
            let mut keep = Vec::with_capacity(column.len());
            let mut hashes: Vec<Option<Vec<u8>>> = Vec::with_capacity(column.len());
            let mut vecs: Vec<Option<Vector>> = Vec::with_capacity(column.len());
            for need in column {
                match need {
                    Need::Keep => {
                        keep.push(true);
                        hashes.push(None);
                        vecs.push(None);
                    }
                    Need::Clear => {
                        keep.push(false);
                        hashes.push(None);
                        vecs.push(None);
                    }
                    Need::Vector(hash) => {
                        keep.push(false);
                        let vector = vectors.get(hash).cloned();
                        if vector.is_some() && !fresh.contains(hash) {
                            report.reused += 1;
                        }
                        // A vector is always there unless the embedder
                        // failed, which returned above; NULL both otherwise.
                        hashes.push(vector.as_ref().map(|_| hash.clone()));
                        vecs.push(vector);
                    }
                }
            }
            keep_arrays.push(keep);
            hash_arrays.push(hashes);
            vector_arrays.push(vecs);
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&keys, &versions];
        for f in 0..fields {
            params.push(&keep_arrays[f]);
            params.push(&hash_arrays[f]);
            params.push(&vector_arrays[f]);
        }
        let written = client.execute(&statements.write_vectors, &params).await?;
        report.docs = written;
        report.superseded = (rows.len() as u64).saturating_sub(written);
        Ok((rows.len(), report))
    }
}
