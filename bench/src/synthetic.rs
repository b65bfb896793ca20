//! A synthetic search collection for latency benchmarks at scale (1M
//! documents and more), loaded straight into the sidecar table without
//! running an embedding model (NOTES.md: embedding a million texts on two
//! cores would take days).
//!
//! Documents (deterministic for a seed):
//! - `body`: [`SyntheticSpec::words_per_doc`] pseudo-words drawn from a
//!   Zipf distribution (exponent 1.1) over a vocabulary of
//!   [`SyntheticSpec::vocabulary`] pronounceable words, so BM25 sees
//!   natural-language-like term statistics;
//! - filter fields: `category` (keyword, 20 values, Zipf), `year` (integer,
//!   uniform 1900..=2024) and `bucket` (integer, `id % 10000`, so
//!   `bucket < 1000` keeps 10 %, `< 100` 1 %, `< 10` 0.1 %, `< 1` 0.01 %);
//! - `v_body`: clustered Gaussian vectors — a centroid drawn uniformly on the
//!   unit sphere (normalised N(0, I)) among [`SyntheticSpec::clusters`],
//!   plus N(0, σ²I) noise with σ = [`SyntheticSpec::noise`], L2-normalised
//!   (the shape of real sentence-embedding spaces: dense clusters of related
//!   texts).
//!
//! Queries are drawn the same way: a fresh vector near a random centroid and
//! three words of a random document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::pin_mut;
use pgvector::Vector;
use quarry_db::quote_ident;
use quarry_search::collection::{Collection, CollectionConfig, content_hash};
use quarry_search::ddl::ensure_sidecar;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, StandardNormal, Zipf};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Model id recorded for synthetic vectors (no model made them).
pub const SYNTHETIC_MODEL: &str = "synthetic-clustered-gaussian";

/// `maintenance_work_mem` for the HNSW build: the graph of 1M 384-dim
/// vectors (about 2 GB) must fit, or pgvector builds it far more slowly
/// on disk.
pub const HNSW_BUILD_MEMORY: &str = "8GB";

/// Rows generated per blocking task and written per COPY chunk.
const CHUNK: u64 = 10_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Documents.
    pub docs: u64,
    /// Vector dimension (384, as all-MiniLM-L6-v2).
    pub dimension: usize,
    /// Gaussian clusters.
    pub clusters: usize,
    /// Per-coordinate noise standard deviation around a centroid.
    pub noise: f32,
    /// Words per document body.
    pub words_per_doc: usize,
    /// Vocabulary size.
    pub vocabulary: usize,
    /// RNG seed.
    pub seed: u64,
}

impl SyntheticSpec {
    /// `docs` documents with the defaults: 384 dims, 1,000 clusters, σ =
    /// 0.05, 30 words per document, 50,000 words, seed 7.
    pub fn new(docs: u64) -> SyntheticSpec {
        SyntheticSpec {
            docs,
            dimension: 384,
            clusters: 1000,
            noise: 0.05,
            words_per_doc: 30,
            vocabulary: 50_000,
            seed: 7,
        }
    }

    /// Collection name, e.g. `synthetic_1000000`.
    pub fn collection_name(&self) -> String {
        format!("synthetic_{}", self.docs)
    }

    /// The collection definition over `quarry_bench.<name>`.
    ///
    /// # Errors
    /// Never for valid specs; the collection's own validation error otherwise.
    pub fn collection(&self) -> anyhow::Result<Collection> {
        Ok(Collection::from_config(
            &self.collection_config()?,
            "synthetic",
        )?)
    }

    /// The collection definition as configuration (for
    /// [`quarry_search::SearchConfig::collections`]).
    ///
    /// # Errors
    /// Never in practice (the JSON is fixed).
    pub fn collection_config(&self) -> anyhow::Result<CollectionConfig> {
        let name = self.collection_name();
        let config: CollectionConfig = serde_json::from_value(serde_json::json!({
            "name": name,
            "source": format!("quarry_bench.{name}"),
            "key": "id",
            "text": [{ "name": "body" }],
            "filters": [
                { "name": "category", "type": "keyword" },
                { "name": "year", "type": "integer" },
                { "name": "bucket", "type": "integer" },
            ],
        }))?;
        Ok(config)
    }
}

/// The fixed random material of a spec: centroids and vocabulary.
#[derive(Debug, Clone)]
pub struct Generator {
    spec: SyntheticSpec,
    centroids: Vec<Vec<f32>>,
    words: Vec<String>,
}

/// One generated document.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticDoc {
    /// Key, `0..docs`.
    pub id: i64,
    /// Body text.
    pub body: String,
    /// Keyword filter value.
    pub category: String,
    /// Integer filter value.
    pub year: i64,
    /// `id % 10000`.
    pub bucket: i64,
    /// Unit vector.
    pub vector: Vec<f32>,
}

/// A generated query.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticQuery {
    /// Three words of a random document.
    pub text: String,
    /// Unit vector near a random centroid.
    pub vector: Vec<f32>,
}

impl Generator {
    /// Draws the centroids and the vocabulary.
    pub fn new(spec: SyntheticSpec) -> Generator {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let centroids = (0..spec.clusters.max(1))
            .map(|_| unit(&mut rng, spec.dimension, None, 1.0))
            .collect();
        let words = (0..spec.vocabulary.max(1)).map(pseudo_word).collect();
        Generator {
            spec,
            centroids,
            words,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &SyntheticSpec {
        &self.spec
    }

    /// Document `id` (deterministic: its own RNG stream).
    pub fn doc(&self, id: u64) -> SyntheticDoc {
        let mut rng =
            StdRng::seed_from_u64(self.spec.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let centroid = &self.centroids[rng.random_range(0..self.centroids.len())];
        let vector = unit(
            &mut rng,
            self.spec.dimension,
            Some(centroid),
            self.spec.noise,
        );
        let body = self.words_from(&mut rng, self.spec.words_per_doc);
        let category = format!("category_{:02}", self.zipf_index(&mut rng, 20));
        SyntheticDoc {
            id: id as i64,
            body,
            category,
            year: rng.random_range(1900..=2024),
            bucket: (id % 10_000) as i64,
            vector,
        }
    }

    /// Query number `n` (its own RNG stream, apart from documents').
    pub fn query(&self, n: u64) -> SyntheticQuery {
        let mut rng =
            StdRng::seed_from_u64(!self.spec.seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let centroid = &self.centroids[rng.random_range(0..self.centroids.len())];
        let vector = unit(
            &mut rng,
            self.spec.dimension,
            Some(centroid),
            self.spec.noise,
        );
        let doc = self.doc(rng.random_range(0..self.spec.docs.max(1)));
        let words: Vec<&str> = doc.body.split(' ').collect();
        let start = rng.random_range(0..words.len().saturating_sub(3).max(1));
        let text = words[start..(start + 3).min(words.len())].join(" ");
        SyntheticQuery { text, vector }
    }

    fn words_from(&self, rng: &mut StdRng, n: usize) -> String {
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[self.zipf_index(rng, self.words.len())]);
        }
        out
    }

    fn zipf_index(&self, rng: &mut StdRng, n: usize) -> usize {
        match Zipf::new(n as f64, 1.1) {
            Ok(zipf) => (zipf.sample(rng) as usize).saturating_sub(1).min(n - 1),
            Err(_) => 0,
        }
    }
}

/// A unit vector: normalise(`centre` + N(0, σ²I)), or a uniform direction
/// without a centre.
fn unit(rng: &mut StdRng, dimension: usize, centre: Option<&[f32]>, sigma: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimension)
        .map(|i| {
            let z: f32 = StandardNormal.sample(rng);
            centre.map_or(0.0, |c| c[i]) + sigma * z
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A pronounceable word for index `i` (consonant–vowel syllables), distinct
/// for distinct `i`.
fn pseudo_word(i: usize) -> String {
    const CONSONANTS: &[u8] = b"bcdfghjklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    let mut n = i;
    let mut word = String::new();
    loop {
        word.push(CONSONANTS[n % CONSONANTS.len()] as char);
        n /= CONSONANTS.len();
        word.push(VOWELS[n % VOWELS.len()] as char);
        n /= VOWELS.len();
        if n == 0 {
            break;
        }
        n -= 1;
    }
    word
}

/// Timings of a load.
#[derive(Debug, Clone, Default)]
pub struct LoadTimings {
    /// The collection was there already (nothing loaded).
    pub reused: bool,
    /// Generating and copying the source table and the sidecar rows.
    pub copy: Duration,
    /// Building the HNSW index (bulk, after the copy).
    pub hnsw: Duration,
}

/// Creates `quarry_bench.<name>` and the collection's sidecar, filled with
/// the spec's documents and vectors, HNSW index built after the copy (much
/// faster than insert by insert); sidecar versions are taken from
/// `quarry.search_version` like the sync's. Reuses a complete earlier load
/// (same definition and document count). `progress` gets documents written.
///
/// # Errors
/// Database errors; a sidecar recorded for another embedder.
pub async fn load(
    client: &mut Client,
    generator: Arc<Generator>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<LoadTimings> {
    let spec = generator.spec().clone();
    let collection = spec.collection()?;
    let name = spec.collection_name();
    let source = format!("quarry_bench.{}", quote_ident(&name));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS quarry_bench;
             CREATE TABLE IF NOT EXISTS {source} (id bigint PRIMARY KEY, body text, category text, year bigint, bucket bigint)"
        ))
        .await?;
    let state =
        ensure_sidecar(client, &collection, Some((SYNTHETIC_MODEL, spec.dimension))).await?;
    let docs_table = collection.docs_table();
    let loaded: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {docs_table} WHERE v_body IS NOT NULL"),
            &[],
        )
        .await?
        .get(0);
    let has_hnsw: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!(
                "quarry.{}",
                quote_ident(&format!("search_{name}_v0"))
            )],
        )
        .await?
        .get(0);
    if !state.created && loaded == spec.docs as i64 && has_hnsw {
        return Ok(LoadTimings {
            reused: true,
            ..LoadTimings::default()
        });
    }
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "TRUNCATE {source}; TRUNCATE {docs_table}; DROP INDEX IF EXISTS quarry.{}",
            quote_ident(&format!("search_{name}_v0"))
        ))
        .await?;
    let vector_type = client.prepare("SELECT $1::vector").await?.params()[0].clone();
    let base: i64 = client
        .query_one(
            "SELECT setval('quarry.search_version', nextval('quarry.search_version') + $1)",
            &[&(spec.docs as i64)],
        )
        .await?
        .get(0);
    let base = base - spec.docs as i64;

    let tx = client.transaction().await?;
    let source_sink = tx
        .copy_in(&format!(
            "COPY {source} (id, body, category, year, bucket) FROM STDIN BINARY"
        ))
        .await?;
    let source_writer = BinaryCopyInWriter::new(
        source_sink,
        &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT8, Type::INT8],
    );
    pin_mut!(source_writer);
    let mut start = 0;
    while start < spec.docs {
        let end = (start + CHUNK).min(spec.docs);
        let g = Arc::clone(&generator);
        let docs = tokio::task::spawn_blocking(move || {
            (start..end).map(|id| g.doc(id)).collect::<Vec<_>>()
        })
        .await?;
        for d in &docs {
            source_writer
                .as_mut()
                .write(&[
                    &d.id as &(dyn ToSql + Sync),
                    &d.body,
                    &d.category,
                    &d.year,
                    &d.bucket,
                ])
                .await?;
        }
        start = end;
    }
    source_writer.finish().await?;

    let sidecar_sink = tx
        .copy_in(&format!(
            "COPY {docs_table} (key, version, t_body, f_category, f_year, f_bucket, embedded, h_body, v_body) FROM STDIN BINARY"
        ))
        .await?;
    let sidecar_writer = BinaryCopyInWriter::new(
        sidecar_sink,
        &[
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::BOOL,
            Type::BYTEA,
            vector_type,
        ],
    );
    pin_mut!(sidecar_writer);
    let mut start = 0;
    while start < spec.docs {
        let end = (start + CHUNK).min(spec.docs);
        let g = Arc::clone(&generator);
        let docs = tokio::task::spawn_blocking(move || {
            (start..end)
                .map(|id| {
                    let d = g.doc(id);
                    let hash = content_hash(&d.body);
                    (d, hash)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (d, hash) in docs {
            let key = d.id.to_string();
            let version = base + d.id + 1;
            let vector = Vector::from(d.vector);
            sidecar_writer
                .as_mut()
                .write(&[
                    &key as &(dyn ToSql + Sync),
                    &version,
                    &d.body,
                    &d.category,
                    &d.year,
                    &d.bucket,
                    &true,
                    &hash,
                    &vector,
                ])
                .await?;
        }
        progress(end);
        start = end;
    }
    sidecar_writer.finish().await?;
    tx.execute(
        "UPDATE quarry.search_collections SET backfill_done = true, updated_at = now() WHERE name = $1",
        &[&name],
    )
    .await?;
    tx.commit().await?;
    let copy = started.elapsed();

    let started = Instant::now();
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '{HNSW_BUILD_MEMORY}'; SET max_parallel_maintenance_workers = 1;
             CREATE INDEX {} ON {docs_table} USING hnsw (v_body vector_cosine_ops);
             RESET maintenance_work_mem; RESET max_parallel_maintenance_workers;
             ANALYZE {docs_table}",
            quote_ident(&format!("search_{name}_v0"))
        ))
        .await?;
    Ok(LoadTimings {
        reused: false,
        copy,
        hnsw: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let g = Generator::new(SyntheticSpec {
            docs: 1000,
            dimension: 16,
            clusters: 4,
            ..SyntheticSpec::new(1000)
        });
        let a = g.doc(17);
        assert_eq!(a, g.doc(17));
        assert_ne!(a.body, g.doc(18).body);
        assert_eq!(a.vector.len(), 16);
        let norm: f32 = a.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(a.body.split(' ').count(), 30);
        assert_eq!(a.bucket, 17);
        assert!((1900..=2024).contains(&a.year));
        let q = g.query(3);
        assert_eq!(q, g.query(3));
        assert_eq!(q.text.split(' ').count(), 3);
    }

    #[test]
    fn pseudo_words_are_distinct() {
        let words: std::collections::HashSet<String> = (0..50_000).map(pseudo_word).collect();
        assert_eq!(words.len(), 50_000);
        assert!(
            words
                .iter()
                .all(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        );
    }
}
