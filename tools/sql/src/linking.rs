//! Schema linking: choose the tables and columns a question needs, so the
//! model sees a small, relevant schema instead of the whole catalog.
//!
//! Each table and column is scored against the question by three signals:
//!
//! - **lexical**: the share of an element's name words (identifiers split at
//!   `_` and camelCase, lower-cased, plural `s` stripped) that occur in the
//!   question, plus a smaller share for words of its comment. A column's
//!   words that are its table's own name words (`pets.pet_age`) count only
//!   when it has no others, and a name of several words matched only by a
//!   generic word (`name`, `number`) counts half. A table's name words that
//!   belong to another table the question names in full count for that
//!   table only ("singers" names `singer`, not `singer_in_concert`, which
//!   still comes in as the join path when "concerts" are named too). These
//!   three rules and the primary-key one below took Spider's context from
//!   39.3 % to 36.7 % of the schema at the same recall (`quarry eval sql
//!   --embeddings`, issue 18);
//! - **values**: a [`ValueIndex`] of distinct values of text columns, so that a
//!   question word found among a column's values links that column ("Turner"
//!   → the artist name column, "watercolour" → medium); a word found in many
//!   columns counts less (weight `1 / columns containing it`);
//! - **embeddings** (optional): cosine similarity between the question's
//!   embedding and each element's description ([`SchemaIndex::set_embeddings`]).
//!
//! Tables are chosen by score (the best one, plus any within a fraction of it),
//! then the tables on the shortest foreign-key paths between them are added
//! (breadth-first search over the undirected foreign-key graph), so joins are
//! always possible. For each chosen table the context keeps its primary key
//! (a lone table's only when the question asks for ids),
//! the foreign keys among chosen tables, and the columns that scored; small
//! tables are kept whole; each table's label column (`name`, `title`) is
//! kept, and its year/date columns when the question mentions a year or a
//! time word. A schema whose whole description is under
//! [`LinkingConfig::whole_schema_tokens`] goes in whole.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use tokio_postgres::GenericClient;

use crate::schema::{SchemaError, TableInfo, compact_description};
use crate::semantic::ResolvedLayer;
use quarry_db::quote_ident;

/// Rough token count of `text` for budgeting prompts: one token per four
/// characters, OpenAI's published rule of thumb for English text. Consistent
/// across contexts, which is what ratios need.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Tuning of [`SchemaIndex::link`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkingConfig {
    /// Most tables chosen by score (join-path tables come on top). Default 5.
    pub max_tables: usize,
    /// A table is chosen when its score is at least this fraction of the best
    /// table's. Default 0.3.
    pub relative_table_threshold: f64,
    /// A column is kept when its score reaches this (besides keys, label
    /// columns such as `name`/`title`, and date/year columns when the
    /// question mentions a year or time). Default 0.34.
    pub column_threshold: f64,
    /// Tables with at most this many columns are kept whole. Default 3.
    pub small_table_columns: usize,
    /// Schemas whose full description is at most this many tokens go in
    /// whole. Default 0 (always link): on Spider, sending schemas under 120
    /// tokens whole raised the average context share from 0.41 to 0.46 for
    /// +0.007 table recall.
    pub whole_schema_tokens: usize,
    /// Values shown per text column whose values matched a question word
    /// (the matching values, most frequent first, each cut to 40
    /// characters). Default 1.
    pub sample_values: usize,
    /// Weight of embedding similarity relative to lexical scores. Default 1.0.
    pub embedding_weight: f64,
}

impl Default for LinkingConfig {
    fn default() -> Self {
        Self {
            max_tables: 5,
            relative_table_threshold: 0.3,
            column_threshold: 0.34,
            small_table_columns: 3,
            whole_schema_tokens: 0,
            sample_values: 1,
            embedding_weight: 1.0,
        }
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "all", "an", "and", "any", "are", "as", "at", "be", "by", "can", "did", "do", "does",
    "each", "for", "from", "give", "has", "have", "how", "i", "in", "is", "it", "its", "list",
    "many", "me", "much", "of", "on", "or", "please", "show", "than", "that", "the", "their",
    "them", "there", "these", "this", "those", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "whose", "with", "you", "find", "return", "id",
];

/// Column name words that a question holds in most phrasings whichever
/// column it needs ("the names of", "the number of"): matching only these
/// counts half.
const GENERIC_COLUMN_WORDS: &[&str] = &["name", "number"];

/// Words of an identifier or sentence: split at non-alphanumerics and
/// lower→upper case changes, lower-cased, stop words dropped, a plural `s`
/// stripped.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    let flush = |current: &mut String, out: &mut Vec<String>| {
        if !current.is_empty() {
            let w = normalise(current);
            if !w.is_empty() && !STOP_WORDS.contains(&w.as_str()) {
                out.push(w);
            }
            current.clear();
        }
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower {
                flush(&mut current, &mut out);
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            current.extend(c.to_lowercase());
        } else {
            flush(&mut current, &mut out);
            prev_lower = false;
        }
    }
    flush(&mut current, &mut out);
    out
}

fn normalise(word: &str) -> String {
    let w = word.to_lowercase();
    if w.len() > 4 && w.ends_with("ies") {
        format!("{}y", &w[..w.len() - 3])
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        w[..w.len() - 1].to_string()
    } else {
        w
    }
}

/// A column that names the rows of its table (`name`, `title`,
/// `<table>_name`, `fullname`): answers to "which X…" questions select it.
fn is_label_column(table: &str, column: &str) -> bool {
    let c = column.to_ascii_lowercase();
    let t = table.to_ascii_lowercase();
    c == "name"
        || c == "title"
        || c == "fullname"
        || c == format!("{t}_name")
        || c == format!("{}_name", t.trim_end_matches('s'))
}

/// Years (1000–2199) and time words in a question call for the chosen
/// tables' date and year columns.
fn is_temporal_question(question: &str) -> bool {
    const WORDS: &[&str] = &[
        "year", "years", "date", "dates", "when", "recent", "latest", "earliest", "oldest",
        "newest", "before", "after", "since", "decade", "century", "month", "time",
    ];
    question.split(|c: char| !c.is_alphanumeric()).any(|w| {
        let lower = w.to_ascii_lowercase();
        WORDS.contains(&lower.as_str())
            || (w.len() == 4
                && w.chars().all(|c| c.is_ascii_digit())
                && (1000..2200).contains(&w.parse::<u32>().unwrap_or(0)))
    })
}

/// A year, date or time column, by name or type.
fn is_temporal_column(name: &str, data_type: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let t = data_type.to_ascii_lowercase();
    n.contains("year")
        || n.contains("date")
        || n.ends_with("_time")
        || n == "time"
        || n.contains("created")
        || t.starts_with("date")
        || t.starts_with("timestamp")
        || t.starts_with("time")
}

/// One unit vector per table.
pub type TableEmbeddings = Vec<Vec<f32>>;
/// Per table, one unit vector per column.
pub type ColumnEmbeddings = Vec<Vec<Vec<f32>>>;

/// `(table index, column index)` in the index's table list.
type ColumnKey = (usize, usize);

/// What a caller may see of the schema, for [`SchemaIndex::link_visible`].
pub trait Visibility {
    /// Whether `table` may be shown at all.
    fn table(&self, table: &TableInfo) -> bool;
    /// Whether `column` of `table` may be shown.
    fn column(&self, table: &TableInfo, column: &str) -> bool;
    /// Whether values of `column` may reach a model (shown, unmasked, not PII).
    fn values(&self, table: &TableInfo, column: &str) -> bool;
}

/// Everything visible: operator work and the unrestricted grant.
#[derive(Debug, Clone, Copy)]
pub struct Everything;

impl Visibility for Everything {
    fn table(&self, _: &TableInfo) -> bool {
        true
    }
    fn column(&self, _: &TableInfo, _: &str) -> bool {
        true
    }
    fn values(&self, _: &TableInfo, _: &str) -> bool {
        true
    }
}

impl Visibility for quarry_auth::Grant {
    fn table(&self, table: &TableInfo) -> bool {
        self.table(&table.schema, &table.name).is_some()
    }
    fn column(&self, table: &TableInfo, column: &str) -> bool {
        self.shows_column(&table.schema, &table.name, column)
    }
    fn values(&self, table: &TableInfo, column: &str) -> bool {
        self.exposes_values(&table.schema, &table.name, column)
    }
}

/// Distinct values of text columns, for linking question words to columns.
#[derive(Debug, Clone, Default)]
pub struct ValueIndex {
    /// `"schema.table"` → column → most frequent values (most frequent first).
    samples: HashMap<String, HashMap<String, Vec<String>>>,
}

/// PostgreSQL type names (as `format_type` prints them) treated as text.
fn is_text_type(data_type: &str) -> bool {
    let t = data_type.to_ascii_lowercase();
    t == "text"
        || t.starts_with("character")
        || t.starts_with("varchar")
        || t.starts_with("char")
        || t == "citext"
        || t == "name"
}

impl ValueIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `values` of `table.column` (`table` schema-qualified), most
    /// frequent first.
    pub fn add(&mut self, table: &str, column: &str, values: impl IntoIterator<Item = String>) {
        self.samples
            .entry(table.to_string())
            .or_default()
            .insert(column.to_string(), values.into_iter().collect());
    }

    /// The recorded values of `table.column`, most frequent first.
    pub fn values(&self, table: &str, column: &str) -> &[String] {
        self.samples
            .get(table)
            .and_then(|c| c.get(column))
            .map_or(&[], Vec::as_slice)
    }

    /// Reads up to `max_distinct` most frequent values of every text column of
    /// `tables` (one `GROUP BY` per column over at most 200,000 rows).
    ///
    /// # Errors
    /// Catalog or query errors.
    pub async fn load<C: GenericClient + Sync>(
        client: &C,
        tables: &[TableInfo],
        max_distinct: usize,
    ) -> Result<Self, SchemaError> {
        let mut index = Self::new();
        for table in tables {
            let qualified = format!(
                "{}.{}",
                quote_ident(&table.schema),
                quote_ident(&table.name)
            );
            for column in table.columns.iter().filter(|c| is_text_type(&c.data_type)) {
                let col = quote_ident(&column.name);
                let sql = format!(
                    "SELECT v FROM (SELECT {col}::text AS v FROM {qualified} WHERE {col} IS NOT NULL LIMIT 200000) s \
                     GROUP BY v ORDER BY count(*) DESC, v LIMIT {max_distinct}"
                );
                let rows = client.query(&sql, &[]).await?;
                let values = rows
                    .iter()
                    .filter_map(|r| r.try_get::<_, String>(0).ok())
                    .collect::<Vec<_>>();
                index.add(&table.qualified_name(), &column.name, values);
            }
        }
        Ok(index)
    }
}

/// The result of linking one question.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedSchema {
    /// Chosen tables, `"schema.table"`, best first (join-path tables last).
    pub tables: Vec<String>,
    /// Chosen columns, `("schema.table", "column")`.
    pub columns: Vec<(String, String)>,
    /// The schema context for the prompt.
    pub context: String,
    /// [`estimate_tokens`] of `context`.
    pub context_tokens: usize,
    /// [`estimate_tokens`] of the whole schema's description.
    pub full_tokens: usize,
    /// True when the whole schema was used (small schema, or nothing matched).
    pub whole_schema: bool,
}

/// A schema prepared for linking questions against it.
#[derive(Debug, Clone)]
pub struct SchemaIndex {
    tables: Vec<TableInfo>,
    values: ValueIndex,
    config: LinkingConfig,
    /// Value word → columns whose values contain it.
    value_words: HashMap<String, Vec<ColumnKey>>,
    /// Per column, each [`words`] of its sampled values → the positions
    /// (ascending, in the order of [`ValueIndex::values`]) of the values
    /// holding it: an inverted list built once here, so choosing the sample
    /// values that match a question looks up the question's words instead
    /// of scanning up to `value_index_max_distinct` values per question.
    value_postings: HashMap<ColumnKey, HashMap<String, Vec<u32>>>,
    /// Undirected foreign-key adjacency between table indexes.
    graph: Vec<BTreeSet<usize>>,
    table_embeddings: Option<Vec<Vec<f32>>>,
    column_embeddings: Option<Vec<Vec<Vec<f32>>>>,
    full_context: String,
    /// The source's semantic layer, resolved against `tables`.
    semantic: ResolvedLayer,
    /// The words of every name, comment and synonym, split once here
    /// rather than on every question.
    lexicon: Lexicon,
}

/// [`words`] of the names, comments and synonyms of an index's tables and
/// columns, by table index (and column index).
#[derive(Debug, Clone, Default)]
struct Lexicon {
    table_names: Vec<Vec<String>>,
    table_comments: Vec<BTreeSet<String>>,
    table_synonyms: Vec<Vec<Vec<String>>>,
    column_names: Vec<Vec<Vec<String>>>,
    column_comments: Vec<Vec<BTreeSet<String>>>,
    column_synonyms: Vec<Vec<Vec<Vec<String>>>>,
}

impl Lexicon {
    fn new(tables: &[TableInfo], semantic: &ResolvedLayer) -> Self {
        let comment = |c: Option<&str>| -> BTreeSet<String> {
            c.map(|c| words(c).into_iter().collect())
                .unwrap_or_default()
        };
        let synonyms = |s: Option<&Vec<String>>| -> Vec<Vec<String>> {
            s.into_iter().flatten().map(|s| words(s)).collect()
        };
        Self {
            table_names: tables.iter().map(|t| words(&t.name)).collect(),
            table_comments: tables
                .iter()
                .map(|t| comment(t.comment.as_deref()))
                .collect(),
            table_synonyms: (0..tables.len())
                .map(|ti| synonyms(semantic.table_synonyms.get(&ti)))
                .collect(),
            column_names: tables
                .iter()
                .map(|t| t.columns.iter().map(|c| words(&c.name)).collect())
                .collect(),
            column_comments: tables
                .iter()
                .map(|t| {
                    t.columns
                        .iter()
                        .map(|c| comment(c.comment.as_deref()))
                        .collect()
                })
                .collect(),
            column_synonyms: tables
                .iter()
                .enumerate()
                .map(|(ti, t)| {
                    (0..t.columns.len())
                        .map(|ci| synonyms(semantic.column_synonyms.get(&(ti, ci))))
                        .collect()
                })
                .collect(),
        }
    }
}

impl SchemaIndex {
    /// Indexes `tables` with their `values`.
    pub fn new(tables: Vec<TableInfo>, values: ValueIndex, config: LinkingConfig) -> Self {
        let by_name: HashMap<String, usize> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.qualified_name(), i))
            .collect();
        let mut graph = vec![BTreeSet::new(); tables.len()];
        for (i, table) in tables.iter().enumerate() {
            for fk in &table.foreign_keys {
                let target = format!("{}.{}", fk.referenced_schema, fk.referenced_table);
                if let Some(&j) = by_name.get(&target)
                    && i != j
                {
                    graph[i].insert(j);
                    graph[j].insert(i);
                }
            }
        }
        let mut value_words: HashMap<String, Vec<ColumnKey>> = HashMap::new();
        let mut value_postings: HashMap<ColumnKey, HashMap<String, Vec<u32>>> = HashMap::new();
        for (ti, table) in tables.iter().enumerate() {
            for (ci, column) in table.columns.iter().enumerate() {
                let mut postings: HashMap<String, Vec<u32>> = HashMap::new();
                let sampled = values.values(&table.qualified_name(), &column.name);
                for (vi, value) in (0u32..).zip(sampled) {
                    for w in words(value) {
                        let positions = postings.entry(w).or_default();
                        if positions.last() != Some(&vi) {
                            positions.push(vi);
                        }
                    }
                }
                for w in postings.keys() {
                    if w.len() >= 3 && !w.chars().all(|c| c.is_ascii_digit()) {
                        value_words.entry(w.clone()).or_default().push((ti, ci));
                    }
                }
                if !postings.is_empty() {
                    value_postings.insert((ti, ci), postings);
                }
            }
        }
        // each word's columns are in catalog order: columns are visited in order
        let full_context = compact_description(&tables);
        let semantic = ResolvedLayer::default();
        let lexicon = Lexicon::new(&tables, &semantic);
        Self {
            tables,
            values,
            config,
            value_words,
            value_postings,
            graph,
            table_embeddings: None,
            column_embeddings: None,
            full_context,
            semantic,
            lexicon,
        }
    }

    /// The index with the source's semantic layer (resolved against this
    /// index's tables, in their order): its descriptions replace the
    /// catalog comments (in the context and in the embedded texts), its
    /// synonyms count as name words of their table or column, and a
    /// business term or metric whose name or a synonym the question holds
    /// (every word of it) links the columns of its SQL, keeps their tables,
    /// and goes into the context as a hint line with its SQL
    /// (`-- term <name>: <sql>`, `-- metric <name>: <sql>`), as does a join
    /// hint whose two tables are chosen (`-- join a~b: <on>`). Install
    /// embeddings after this, so that they are of the annotated texts.
    #[must_use]
    pub fn with_semantic(mut self, layer: ResolvedLayer) -> Self {
        self.tables = layer.annotate(&self.tables);
        self.full_context = compact_description(&self.tables);
        self.table_embeddings = None;
        self.column_embeddings = None;
        self.semantic = layer;
        self.lexicon = Lexicon::new(&self.tables, &self.semantic);
        self
    }

    /// The semantic layer in use (empty without one).
    pub fn semantic(&self) -> &ResolvedLayer {
        &self.semantic
    }

    /// The indexed tables.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// The whole schema as prompt context.
    pub fn full_context(&self) -> &str {
        &self.full_context
    }

    /// Texts to embed for [`Self::set_embeddings`]: one per table, then, per
    /// table, one per column (in catalog order).
    pub fn element_texts(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let tables = self
            .tables
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                format!(
                    "{} {} {}",
                    words(&t.name).join(" "),
                    self.semantic
                        .table_synonyms
                        .get(&ti)
                        .map(|s| s.join(", "))
                        .unwrap_or_default(),
                    t.comment.as_deref().unwrap_or_default()
                )
            })
            .collect();
        let columns = self
            .tables
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                let table = words(&t.name).join(" ");
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(ci, c)| {
                        format!(
                            "{table} {} {} {}",
                            words(&c.name).join(" "),
                            self.semantic
                                .column_synonyms
                                .get(&(ti, ci))
                                .map(|s| s.join(", "))
                                .unwrap_or_default(),
                            c.comment.as_deref().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .collect();
        (tables, columns)
    }

    /// Installs embeddings of [`Self::element_texts`] (unit vectors, same
    /// model as the question's). Ignored when the shapes do not match.
    pub fn set_embeddings(&mut self, tables: Vec<Vec<f32>>, columns: Vec<Vec<Vec<f32>>>) {
        let shapes_match = tables.len() == self.tables.len()
            && columns.len() == self.tables.len()
            && columns
                .iter()
                .zip(&self.tables)
                .all(|(c, t)| c.len() == t.columns.len());
        if shapes_match {
            self.table_embeddings = Some(tables);
            self.column_embeddings = Some(columns);
        }
    }

    /// Embeds every table and column description with `embedder` and installs
    /// the vectors ([`Self::set_embeddings`]).
    ///
    /// # Errors
    /// The embedder's error.
    pub async fn embed(
        &mut self,
        embedder: &dyn quarry_llm::embed::Embedder,
    ) -> Result<(), quarry_llm::LlmError> {
        let (tables, columns) = self.element_texts();
        let counts: Vec<usize> = columns.iter().map(Vec::len).collect();
        let mut texts = tables;
        texts.extend(columns.into_iter().flatten());
        let mut vectors = embedder.embed(texts).await?.into_iter();
        let table_vectors: Vec<Vec<f32>> = vectors.by_ref().take(self.tables.len()).collect();
        let column_vectors = counts
            .into_iter()
            .map(|n| vectors.by_ref().take(n).collect())
            .collect();
        self.set_embeddings(table_vectors, column_vectors);
        Ok(())
    }

    /// The installed embeddings (tables, then columns per table), if any.
    pub fn embeddings(&self) -> (Option<TableEmbeddings>, Option<ColumnEmbeddings>) {
        (
            self.table_embeddings.clone(),
            self.column_embeddings.clone(),
        )
    }

    fn embedding_score(&self, a: Option<&Vec<f32>>, question: Option<&[f32]>) -> f64 {
        match (a, question) {
            (Some(a), Some(q)) if a.len() == q.len() => {
                let cos: f32 = a.iter().zip(q).map(|(x, y)| x * y).sum();
                // MiniLM cosine for unrelated text sits around 0–0.2
                (f64::from(cos) - 0.2).max(0.0) * self.config.embedding_weight
            }
            _ => 0.0,
        }
    }

    /// Links `question` (and its embedding, when the index has embeddings).
    pub fn link(&self, question: &str, question_embedding: Option<&[f32]>) -> LinkedSchema {
        self.link_visible(question, question_embedding, &Everything)
    }

    /// [`Self::link`] over only what `visible` lets the caller see: hidden
    /// tables and columns are never scored, chosen or shown, and only
    /// columns whose values may reach a model link by value or give sample
    /// values (ARCHITECTURE.md: the model only sees what the caller may use).
    pub fn link_visible(
        &self,
        question: &str,
        question_embedding: Option<&[f32]>,
        visible: &dyn Visibility,
    ) -> LinkedSchema {
        let full_tokens = estimate_tokens(&self.full_context);
        let shown: Vec<bool> = self.tables.iter().map(|t| visible.table(t)).collect();
        if self.tables.is_empty() || full_tokens <= self.config.whole_schema_tokens {
            return self.whole(full_tokens, &shown, visible);
        }
        let q_words: Vec<String> = words(question);
        let q_set: HashSet<&str> = q_words.iter().map(String::as_str).collect();

        // value hits: column → weight
        let mut value_hits: HashMap<ColumnKey, f64> = HashMap::new();
        for w in &q_set {
            if let Some(columns) = self.value_words.get(*w) {
                let columns: Vec<&ColumnKey> = columns
                    .iter()
                    .filter(|(t, c)| {
                        shown[*t]
                            && visible.values(&self.tables[*t], &self.tables[*t].columns[*c].name)
                    })
                    .collect();
                if columns.is_empty() {
                    continue;
                }
                let weight = 1.0 / columns.len() as f64;
                for key in columns {
                    *value_hits.entry(*key).or_default() += weight;
                }
            }
        }

        let comment_score = |cw: &BTreeSet<String>| -> f64 {
            if cw.is_empty() {
                return 0.0;
            }
            let hits = cw.iter().filter(|w| q_set.contains(w.as_str())).count();
            (0.5 * hits as f64).min(1.0)
        };
        // a column's name and comment words that are its table's own name
        // words (`pets.pet_age`, comment "pet age") count only when the name
        // (comment) has no others: the table's name in the question says
        // which table, not which column. A name (comment) of several words
        // matched only by generic ones (`GENERIC_COLUMN_WORDS`) counts half.
        let column_lexical = |ti: usize, ci: usize| -> f64 {
            let lex = &self.lexicon;
            let ignored = |w: &str| lex.table_names[ti].iter().any(|t| t == w);
            let name_words = &lex.column_names[ti][ci];
            let name = if name_words.is_empty() {
                0.0
            } else {
                let own = name_words.iter().any(|w| !ignored(w));
                let (mut matched, mut generic_only) = (0usize, true);
                for w in name_words
                    .iter()
                    .filter(|w| (!own || !ignored(w)) && q_set.contains(w.as_str()))
                {
                    matched += 1;
                    generic_only &= GENERIC_COLUMN_WORDS.contains(&w.as_str());
                }
                let share = matched as f64 / name_words.len() as f64;
                if name_words.len() > 1 && generic_only {
                    share * 0.5
                } else {
                    share
                }
            };
            let comment_words = &lex.column_comments[ti][ci];
            let own = comment_words.iter().any(|w| !ignored(w));
            let hits: f64 = comment_words
                .iter()
                .filter(|w| (!own || !ignored(w)) && q_set.contains(w.as_str()))
                .map(|w| {
                    if comment_words.len() > 1 && GENERIC_COLUMN_WORDS.contains(&w.as_str()) {
                        0.5
                    } else {
                        1.0
                    }
                })
                .sum();
            name.max((0.5 * hits).min(1.0))
        };

        // synonyms from the semantic layer: a synonym whose words are all in
        // the question counts as the element's name
        let synonym_score = |synonyms: &[Vec<String>]| -> f64 {
            synonyms
                .iter()
                .map(|w| {
                    if !w.is_empty() && w.iter().all(|w| q_set.contains(w.as_str())) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .fold(0.0, f64::max)
        };
        // business terms and metrics the question names (every word of the
        // name or of a synonym), over what the caller may see
        let hint_visible = |hint: &crate::semantic::Hint| {
            hint.tables.iter().all(|&t| shown[t])
                && hint.columns.iter().all(|&(t, c)| {
                    shown[t] && visible.column(&self.tables[t], &self.tables[t].columns[c].name)
                })
        };
        let matched: Vec<&crate::semantic::Hint> = self
            .semantic
            .hints
            .iter()
            .filter(|h| {
                h.phrases
                    .iter()
                    .any(|p| p.iter().all(|w| q_set.contains(w.as_str())))
                    && hint_visible(h)
            })
            .collect();
        let mut term_hits: HashSet<ColumnKey> = HashSet::new();
        for hint in &matched {
            term_hits.extend(hint.columns.iter().copied());
        }

        // words of the names of tables the question names in full: in
        // another table's name they are explained by that table ("singers"
        // names `singer`, not `singer_in_concert`)
        let named_in_full: HashSet<&str> = self
            .lexicon
            .table_names
            .iter()
            .enumerate()
            .filter(|&(ti, n)| {
                shown[ti] && !n.is_empty() && n.iter().all(|w| q_set.contains(w.as_str()))
            })
            .flat_map(|(_, n)| n.iter().map(String::as_str))
            .collect();
        let table_name_score = |name_words: &[String]| -> f64 {
            if name_words.is_empty() {
                return 0.0;
            }
            let full = name_words.iter().all(|w| q_set.contains(w.as_str()));
            let hits = name_words
                .iter()
                .filter(|w| {
                    q_set.contains(w.as_str()) && (full || !named_in_full.contains(w.as_str()))
                })
                .count();
            hits as f64 / name_words.len() as f64
        };
        let mut column_scores: Vec<Vec<f64>> = Vec::with_capacity(self.tables.len());
        let mut lexical_scores: Vec<Vec<f64>> = Vec::with_capacity(self.tables.len());
        let mut table_scores: Vec<f64> = Vec::with_capacity(self.tables.len());
        for (ti, table) in self.tables.iter().enumerate() {
            let lexical: Vec<f64> = table
                .columns
                .iter()
                .enumerate()
                .map(|(ci, _)| {
                    column_lexical(ti, ci).max(synonym_score(&self.lexicon.column_synonyms[ti][ci]))
                })
                .collect();
            let scores: Vec<f64> = table
                .columns
                .iter()
                .enumerate()
                .map(|(ci, _)| {
                    let lexical = lexical[ci];
                    let value = value_hits.get(&(ti, ci)).copied().unwrap_or(0.0).min(1.0);
                    let emb = self.embedding_score(
                        self.column_embeddings
                            .as_ref()
                            .and_then(|c| c.get(ti))
                            .and_then(|c| c.get(ci)),
                        question_embedding,
                    );
                    let term = if term_hits.contains(&(ti, ci)) {
                        1.0
                    } else {
                        0.0
                    };
                    lexical + value + emb + term
                })
                .collect();
            let name = table_name_score(&self.lexicon.table_names[ti])
                .max(synonym_score(&self.lexicon.table_synonyms[ti]));
            let comment = comment_score(&self.lexicon.table_comments[ti]);
            let emb = self.embedding_score(
                self.table_embeddings.as_ref().and_then(|t| t.get(ti)),
                question_embedding,
            );
            // evidence from columns: the two best column scores
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let columns_evidence: f64 = sorted.iter().take(2).sum();
            table_scores.push(1.5 * name + comment + 0.6 * columns_evidence + emb);
            column_scores.push(scores);
            lexical_scores.push(lexical);
        }

        for (score, shown) in table_scores.iter_mut().zip(&shown) {
            if !shown {
                *score = 0.0;
            }
        }
        let best = table_scores.iter().copied().fold(0.0, f64::max);
        if best <= 0.0 {
            return self.whole(full_tokens, &shown, visible);
        }
        let mut ranked: Vec<usize> = (0..self.tables.len()).filter(|&t| shown[t]).collect();
        ranked.sort_by(|&a, &b| table_scores[b].total_cmp(&table_scores[a]).then(a.cmp(&b)));
        let mut chosen: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|&t| table_scores[t] >= self.config.relative_table_threshold * best)
            .take(self.config.max_tables.max(1))
            .collect();
        // the tables of the business terms and metrics the question names
        for hint in &matched {
            for &t in &hint.tables {
                if !chosen.contains(&t) {
                    chosen.push(t);
                }
            }
        }
        // join paths between the chosen tables
        let seeds = chosen.clone();
        for (i, &a) in seeds.iter().enumerate() {
            for &b in &seeds[i + 1..] {
                for t in self.shortest_path(a, b) {
                    if shown[t] && !chosen.contains(&t) {
                        chosen.push(t);
                    }
                }
            }
        }
        let chosen_set: HashSet<usize> = chosen.iter().copied().collect();

        let temporal_question = is_temporal_question(question);
        let asks_for_ids = question.split(|c: char| !c.is_alphanumeric()).any(|w| {
            let w = w.to_ascii_lowercase();
            w == "id" || w == "ids" || w == "identifier" || w == "identifiers"
        });
        let mut pruned = Vec::with_capacity(chosen.len());
        let mut columns = Vec::new();
        let mut samples = Vec::new();
        for &ti in &chosen {
            let table = &self.tables[ti];
            let keep_all = table.columns.len() <= self.config.small_table_columns;
            let table_visible = |c: &str| visible.column(table, c);
            let mut keep: BTreeSet<usize> = BTreeSet::new();
            for (ci, column) in table.columns.iter().enumerate() {
                if !visible.column(table, &column.name) {
                    continue;
                }
                // a lone table's primary key only when the question asks
                // for ids: with no join it serves no other purpose
                let is_key = (table.primary_key.contains(&column.name)
                    && (chosen.len() > 1 || asks_for_ids))
                    || table.foreign_keys.iter().any(|fk| {
                        fk.columns.contains(&column.name)
                            && chosen_set.iter().any(|&o| {
                                self.tables[o].schema == fk.referenced_schema
                                    && self.tables[o].name == fk.referenced_table
                            })
                    })
                    || chosen_set.iter().any(|&o| {
                        o != ti
                            && self.tables[o].foreign_keys.iter().any(|fk| {
                                fk.referenced_schema == table.schema
                                    && fk.referenced_table == table.name
                                    && fk.referenced_columns.contains(&column.name)
                            })
                    });
                let label = is_label_column(&table.name, &column.name);
                let temporal =
                    temporal_question && is_temporal_column(&column.name, &column.data_type);
                if keep_all
                    || is_key
                    || label
                    || temporal
                    || column_scores[ti][ci] >= self.config.column_threshold
                {
                    keep.insert(ci);
                }
            }
            let qualified = table.qualified_name();
            for &ci in &keep {
                let column = &table.columns[ci];
                columns.push((qualified.clone(), column.name.clone()));
                // a value sample where the value is what linked the column
                // (its name and comment did not): the model needs the spelling
                if value_hits.contains_key(&(ti, ci))
                    && lexical_scores[ti][ci] < self.config.column_threshold
                    && self.config.sample_values > 0
                {
                    let values = self.values.values(&qualified, &column.name);
                    // only values that matched a question word: they tell the
                    // model the exact spelling to filter on
                    let mut positions: Vec<u32> = self
                        .value_postings
                        .get(&(ti, ci))
                        .map(|postings| {
                            q_set
                                .iter()
                                .filter_map(|w| postings.get(*w))
                                .flat_map(|p| p.iter().take(self.config.sample_values))
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default();
                    positions.sort_unstable();
                    positions.dedup();
                    let shown: Vec<&String> = positions
                        .iter()
                        .filter_map(|&vi| values.get(vi as usize))
                        .take(self.config.sample_values)
                        .collect();
                    if !shown.is_empty() {
                        samples.push(format!(
                            "-- {}.{} e.g. {}",
                            table.name,
                            column.name,
                            shown
                                .iter()
                                .map(|v| {
                                    let cut: String = v.chars().take(40).collect();
                                    let more = if cut.len() < v.len() { "…" } else { "" };
                                    format!("'{}{more}'", cut.replace('\'', "''"))
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
            let mut t = table.clone();
            t.columns = keep.iter().map(|&ci| table.columns[ci].clone()).collect();
            t.primary_key.retain(|c| table_visible(c));
            t.foreign_keys.retain(|fk| {
                fk.columns.iter().all(|c| table_visible(c))
                    && chosen_set.iter().any(|&o| {
                        self.tables[o].schema == fk.referenced_schema
                            && self.tables[o].name == fk.referenced_table
                    })
            });
            pruned.push(t);
        }
        let mut context = compact_description(&pruned);
        let joins = self.semantic.hints.iter().filter(|h| {
            h.kind == "join" && h.tables.iter().all(|t| chosen_set.contains(t)) && hint_visible(h)
        });
        for hint in matched.iter().copied().chain(joins) {
            let _ = std::fmt::Write::write_fmt(
                &mut context,
                format_args!("-- {} {}: {}\n", hint.kind, hint.name, hint.sql),
            );
        }
        for line in samples {
            context.push_str(&line);
            context.push('\n');
        }
        LinkedSchema {
            tables: chosen
                .iter()
                .map(|&t| self.tables[t].qualified_name())
                .collect(),
            columns,
            context_tokens: estimate_tokens(&context),
            context,
            full_tokens,
            whole_schema: false,
        }
    }

    fn whole(&self, full_tokens: usize, shown: &[bool], visible: &dyn Visibility) -> LinkedSchema {
        let tables: Vec<TableInfo> = self
            .tables
            .iter()
            .zip(shown)
            .filter(|(_, shown)| **shown)
            .map(|(t, _)| {
                let mut t = t.clone();
                let original = t.clone();
                t.columns.retain(|c| visible.column(&original, &c.name));
                t.primary_key.retain(|c| visible.column(&original, c));
                t.foreign_keys.retain(|fk| {
                    fk.columns.iter().all(|c| visible.column(&original, c))
                        && self.tables.iter().zip(shown).any(|(o, s)| {
                            *s && o.schema == fk.referenced_schema && o.name == fk.referenced_table
                        })
                });
                t
            })
            .collect();
        let everything = tables.len() == self.tables.len()
            && tables
                .iter()
                .zip(&self.tables)
                .all(|(a, b)| a.columns.len() == b.columns.len());
        let context = if everything {
            self.full_context.clone()
        } else {
            compact_description(&tables)
        };
        LinkedSchema {
            tables: tables.iter().map(TableInfo::qualified_name).collect(),
            columns: tables
                .iter()
                .flat_map(|t| {
                    t.columns
                        .iter()
                        .map(move |c| (t.qualified_name(), c.name.clone()))
                })
                .collect(),
            context_tokens: estimate_tokens(&context),
            context,
            full_tokens,
            whole_schema: true,
        }
    }

    /// Tables strictly between `a` and `b` on a shortest foreign-key path
    /// (empty when adjacent or unconnected).
    fn shortest_path(&self, a: usize, b: usize) -> Vec<usize> {
        let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([a]);
        let mut seen = BTreeSet::from([a]);
        while let Some(node) = queue.pop_front() {
            if node == b {
                let mut path = Vec::new();
                let mut current = b;
                while let Some(&p) = previous.get(&current) {
                    if p != a {
                        path.push(p);
                    }
                    current = p;
                }
                return path;
            }
            for &next in &self.graph[node] {
                if seen.insert(next) {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
