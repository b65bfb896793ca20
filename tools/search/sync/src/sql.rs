//! SQL text the sync runs: trigger functions, trigger DDL and the statements
//! that copy source rows into a collection's sidecar table. Pure string
//! building, so it is unit-tested without a database.

use std::fmt::Write as _;

use quarry_db::{quote_ident, quote_literal};
use quarry_search::collection::{
    Collection, FilterType, TableName, filter_column, hash_column, text_column, vector_column,
};

/// Channel the source triggers notify (payload: collection name).
pub const OUTBOX_CHANNEL: &str = "quarry_search_outbox";
/// Channel notified when sidecar rows get new versions (payload: collection name).
pub const DOCS_CHANNEL: &str = "quarry_search_docs";

/// The version sequence every sidecar write draws from.
pub(crate) const VERSION_SEQ: &str = "quarry.search_version";

/// Trigger functions, created with `CREATE OR REPLACE` (idempotent).
///
/// `quarry.search_enqueue(collection, key_column)` is a statement-level
/// trigger over transition tables `quarry_old` / `quarry_new`: it appends
/// the keys a statement touched to `quarry.search_outbox` (one entry per
/// row, no de-duplication: the sync dedupes, and a hash aggregate over a
/// bulk load costs more than the extra entries) and
/// notifies [`OUTBOX_CHANNEL`]; an UPDATE enqueues old and new keys, so a
/// changed key reaches both documents. `quarry.search_truncated(collection)`
/// (on TRUNCATE, which has no transition tables) restarts the collection's
/// backfill: every document is re-read and the ones no longer in the source
/// are tombstoned. Both are `SECURITY DEFINER` so writers of the source need
/// no rights on the `quarry` schema.
pub(crate) const TRIGGER_FUNCTIONS: &[&str] = &[
    r#"CREATE OR REPLACE FUNCTION quarry.search_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  n bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    EXECUTE format(
      'INSERT INTO quarry.search_outbox (collection, key) '
      'SELECT $1, (r.%I)::text FROM quarry_new r WHERE r.%I IS NOT NULL',
      TG_ARGV[1], TG_ARGV[1]) USING TG_ARGV[0];
  ELSIF TG_OP = 'UPDATE' THEN
    EXECUTE format(
      'INSERT INTO quarry.search_outbox (collection, key) '
      'SELECT $1, k FROM (SELECT (r.%I)::text FROM quarry_old r '
      'UNION SELECT (r.%I)::text FROM quarry_new r) AS u(k) WHERE k IS NOT NULL',
      TG_ARGV[1], TG_ARGV[1]) USING TG_ARGV[0];
  ELSE
    EXECUTE format(
      'INSERT INTO quarry.search_outbox (collection, key) '
      'SELECT $1, (r.%I)::text FROM quarry_old r WHERE r.%I IS NOT NULL',
      TG_ARGV[1], TG_ARGV[1]) USING TG_ARGV[0];
  END IF;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN
    PERFORM pg_notify('quarry_search_outbox', TG_ARGV[0]);
  END IF;
  RETURN NULL;
END
$fn$"#,
    "REVOKE ALL ON FUNCTION quarry.search_enqueue() FROM PUBLIC",
    r#"CREATE OR REPLACE FUNCTION quarry.search_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  UPDATE quarry.search_collections
     SET backfill_after = NULL, backfill_done = false, backfill_from_version = NULL, updated_at = now()
   WHERE name = TG_ARGV[0];
  PERFORM pg_notify('quarry_search_outbox', TG_ARGV[0]);
  RETURN NULL;
END
$fn$"#,
    "REVOKE ALL ON FUNCTION quarry.search_truncated() FROM PUBLIC",
];

/// Name of one of `collection`'s triggers; `suffix` is `ins`, `upd`, `del`
/// or `trunc`. At most 14 + 24 + 6 bytes, within `NAMEDATALEN`.
pub(crate) fn trigger_name(collection: &str, suffix: &str) -> String {
    format!("quarry_search_{collection}_{suffix}")
}

/// The trigger suffixes installed on every watched table.
pub(crate) const TRIGGER_SUFFIXES: [&str; 4] = ["ins", "upd", "del", "trunc"];

/// Statements (re)creating `collection`'s triggers on `table`, whose
/// `key_column` holds the source key.
pub(crate) fn trigger_ddl(collection: &str, table: &TableName, key_column: &str) -> Vec<String> {
    let table = table.quoted();
    let args = format!(
        "{}, {}",
        quote_literal(collection),
        quote_literal(key_column)
    );
    let mut statements = Vec::new();
    for suffix in TRIGGER_SUFFIXES {
        statements.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {table}",
            quote_ident(&trigger_name(collection, suffix))
        ));
    }
    let enqueue = "EXECUTE FUNCTION quarry.search_enqueue";
    statements.push(format!(
        "CREATE TRIGGER {} AFTER INSERT ON {table} REFERENCING NEW TABLE AS quarry_new \
         FOR EACH STATEMENT {enqueue}({args})",
        quote_ident(&trigger_name(collection, "ins"))
    ));
    statements.push(format!(
        "CREATE TRIGGER {} AFTER UPDATE ON {table} REFERENCING OLD TABLE AS quarry_old NEW TABLE AS quarry_new \
         FOR EACH STATEMENT {enqueue}({args})",
        quote_ident(&trigger_name(collection, "upd"))
    ));
    statements.push(format!(
        "CREATE TRIGGER {} AFTER DELETE ON {table} REFERENCING OLD TABLE AS quarry_old \
         FOR EACH STATEMENT {enqueue}({args})",
        quote_ident(&trigger_name(collection, "del"))
    ));
    statements.push(format!(
        "CREATE TRIGGER {} AFTER TRUNCATE ON {table} \
         FOR EACH STATEMENT EXECUTE FUNCTION quarry.search_truncated({})",
        quote_ident(&trigger_name(collection, "trunc")),
        quote_literal(collection)
    ));
    statements
}

/// What the statements need to know about the source beyond the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceShape {
    /// The key column's type, as `format_type` spells it (`integer`, `text`, …).
    pub key_type: String,
    /// Per filter field (configuration order): its expression yields an array.
    pub filter_is_array: Vec<bool>,
}

/// Statements specialised to one collection and its source's shape.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// The key column's type (see [`SourceShape::key_type`]).
    pub key_type: String,
    /// Backfill batch from the start: `$1` limit (bigint). Returns one row
    /// `(rows bigint, last_key text)`.
    pub backfill_first: String,
    /// Backfill batch after a checkpoint: `$1` limit, `$2` last key (text).
    pub backfill_next: String,
    /// Sync of named keys: `$1` keys (text[]). Returns one row
    /// `(found bigint, upserted bigint, tombstoned bigint)`.
    pub sync_keys: String,
    /// Tombstones every live doc with `version <= $1` (bigint); returns the count.
    pub sweep: String,
    /// Pending docs for embedding: `$1` limit. Columns: key, version, then
    /// per text field `t_`, `h_`, `v_ IS NOT NULL`.
    pub pending: String,
    /// Writes vectors: `$1` keys, `$2` versions, then per text field
    /// `keep bool[]`, `h bytea[]`, `v vector[]`. Does not touch `version`.
    pub write_vectors: String,
}

impl Statements {
    pub(crate) fn new(collection: &Collection, shape: &SourceShape) -> Statements {
        let docs = collection.docs_table();
        let source = collection.source.quoted();
        let key = format!("src.{}", quote_ident(&collection.key));
        let key_type = &shape.key_type;

        // One LATERAL subquery evaluates every field expression once per row.
        let mut lateral = String::from("SELECT ");
        let mut first = true;
        let mut sep = |s: &mut String| {
            if !first {
                s.push_str(", ");
            }
            first = false;
        };
        for (i, field) in collection.text.iter().enumerate() {
            sep(&mut lateral);
            let _ = write!(lateral, "({})::text AS t{i}", field.source.select_expr());
        }
        for (i, field) in collection.filters.iter().enumerate() {
            sep(&mut lateral);
            let expr = field.source.select_expr();
            let value = match field.kind {
                FilterType::Keyword => format!("({expr})::text"),
                FilterType::Integer => format!("({expr})::bigint"),
                FilterType::Float => format!("({expr})::double precision"),
                FilterType::Keywords => {
                    if shape.filter_is_array.get(i).copied().unwrap_or(true) {
                        format!("array_remove(({expr})::text[], NULL)")
                    } else {
                        format!("array_remove(ARRAY[({expr})::text], NULL)")
                    }
                }
            };
            let _ = write!(lateral, "{value} AS f{i}");
        }
        sep(&mut lateral);
        lateral.push_str(&stored_expr(collection));
        lateral.push_str(" AS s");

        // Values as written to the sidecar, selected from a CTE row `b`.
        let mut columns = vec!["key".to_owned(), "version".into(), "deleted".into()];
        let mut values = vec![
            "b.key".to_owned(),
            format!("nextval('{VERSION_SEQ}')"),
            "false".into(),
        ];
        let mut texts = Vec::new();
        for (i, field) in collection.text.iter().enumerate() {
            let column = quote_ident(&text_column(&field.name));
            columns.push(column.clone());
            values.push(format!(
                "CASE WHEN b.t{i} ~ '^[[:space:]]*$' THEN NULL ELSE b.t{i} END"
            ));
            texts.push(column);
        }
        let mut filters = Vec::new();
        for (i, field) in collection.filters.iter().enumerate() {
            let column = quote_ident(&filter_column(&field.name));
            columns.push(column.clone());
            values.push(format!("b.f{i}"));
            filters.push(column);
        }
        columns.push("stored".into());
        values.push("b.s".into());
        columns.push("embedded".into());
        values.push("false".into());

        let mut set = vec![
            "version = EXCLUDED.version".to_owned(),
            "deleted = false".into(),
        ];
        for column in texts.iter().chain(&filters) {
            set.push(format!("{column} = EXCLUDED.{column}"));
        }
        set.push("stored = EXCLUDED.stored".into());
        // Vectors stay current only when no text changed.
        let same_text = texts
            .iter()
            .map(|c| format!("d.{c} IS NOT DISTINCT FROM EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        set.push(format!(
            "embedded = d.embedded AND NOT d.deleted AND {same_text}"
        ));
        let content: Vec<String> = texts
            .iter()
            .chain(&filters)
            .cloned()
            .chain(std::iter::once("stored".to_owned()))
            .collect();
        let changed = format!(
            "d.deleted OR ({}) IS DISTINCT FROM ({})",
            content
                .iter()
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            content
                .iter()
                .map(|c| format!("EXCLUDED.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let columns = columns.join(", ");
        let values = values.join(", ");
        let set = set.join(", ");
        let upsert = |rows: &str, only_changed: bool| {
            let filter = if only_changed {
                format!(" WHERE {changed}")
            } else {
                String::new()
            };
            format!(
                "INSERT INTO {docs} AS d ({columns}) SELECT {values} FROM {rows} AS b \
                 ON CONFLICT (key) DO UPDATE SET {set}{filter} RETURNING 1"
            )
        };

        let mut tombstone = vec![
            "deleted = true".to_owned(),
            format!("version = nextval('{VERSION_SEQ}')"),
        ];
        for column in texts.iter().chain(&filters) {
            tombstone.push(format!("{column} = NULL"));
        }
        tombstone.push("stored = '{}'::jsonb".into());
        tombstone.push("embedded = false".into());
        let tombstone = tombstone.join(", ");

        let from = format!("FROM {source} AS src CROSS JOIN LATERAL ({lateral}) AS v");
        let backfill = |bound: &str| {
            format!(
                "WITH batch AS MATERIALIZED (\
                   SELECT {key} AS sort_key, ({key})::text AS key, v.* {from} \
                   WHERE {key} IS NOT NULL{bound} ORDER BY {key} LIMIT $1), \
                 up AS ({}) \
                 SELECT (SELECT count(*) FROM up), \
                        (SELECT key FROM batch ORDER BY sort_key DESC LIMIT 1)",
                upsert("batch", false)
            )
        };
        let backfill_first = backfill("");
        let backfill_next = backfill(&format!(" AND {key} > $2::text::{key_type}"));

        let sync_keys = format!(
            "WITH found AS MATERIALIZED (\
               SELECT ({key})::text AS key, v.* {from} \
               WHERE {key} = ANY($1::text[]::{key_type}[])), \
             up AS ({}), \
             gone AS (UPDATE {docs} AS d SET {tombstone} \
               WHERE d.key = ANY($1::text[]) AND NOT d.deleted \
                 AND d.key NOT IN (SELECT key FROM found) RETURNING 1) \
             SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM up), \
                    (SELECT count(*) FROM gone)",
            upsert("found", true)
        );

        let sweep = format!(
            "WITH gone AS (UPDATE {docs} AS d SET {tombstone} \
               WHERE d.version <= $1 AND NOT d.deleted RETURNING 1) \
             SELECT count(*) FROM gone"
        );

        let mut pending_columns = String::from("key, version");
        for field in &collection.text {
            let _ = write!(
                pending_columns,
                ", {}, {}, {} IS NOT NULL",
                quote_ident(&text_column(&field.name)),
                quote_ident(&hash_column(&field.name)),
                quote_ident(&vector_column(&field.name)),
            );
        }
        let pending = format!(
            "SELECT {pending_columns} FROM {docs} \
             WHERE NOT embedded AND NOT deleted ORDER BY version LIMIT $1"
        );

        let mut unnest = vec!["$1::text[]".to_owned(), "$2::bigint[]".into()];
        let mut names = vec!["key".to_owned(), "version".into()];
        let mut assign = Vec::new();
        for (i, field) in collection.text.iter().enumerate() {
            let p = 3 + 3 * i;
            unnest.push(format!("${p}::bool[]"));
            unnest.push(format!("${}::bytea[]", p + 1));
            unnest.push(format!("${}::vector[]", p + 2));
            names.extend([format!("k{i}"), format!("h{i}"), format!("v{i}")]);
            let h = quote_ident(&hash_column(&field.name));
            let v = quote_ident(&vector_column(&field.name));
            assign.push(format!("{h} = CASE WHEN u.k{i} THEN d.{h} ELSE u.h{i} END"));
            assign.push(format!("{v} = CASE WHEN u.k{i} THEN d.{v} ELSE u.v{i} END"));
        }
        assign.push("embedded = true".into());
        let write_vectors = format!(
            "UPDATE {docs} AS d SET {} FROM unnest({}) AS u({}) \
             WHERE d.key = u.key AND d.version = u.version AND NOT d.deleted",
            assign.join(", "),
            unnest.join(", "),
            names.join(", ")
        );

        Statements {
            key_type: key_type.clone(),
            backfill_first,
            backfill_next,
            sync_keys,
            sweep,
            pending,
            write_vectors,
        }
    }
}

/// `jsonb` of the stored fields, `{name: to_jsonb(value)}`; built from
/// chunks of 40 pairs because a function takes at most 100 arguments.
fn stored_expr(collection: &Collection) -> String {
    if collection.stored.is_empty() {
        return "'{}'::jsonb".into();
    }
    collection
        .stored
        .chunks(40)
        .map(|chunk| {
            let pairs = chunk
                .iter()
                .map(|f| {
                    format!(
                        "{}, to_jsonb({})",
                        quote_literal(&f.name),
                        f.source.select_expr()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("jsonb_build_object({pairs})")
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_search::collection::CollectionConfig;

    fn collection() -> Collection {
        let config: CollectionConfig = toml::from_str(
            r#"
            name = "art"
            source = "public.works"
            key = "id"
            text = [{ name = "title" }, { name = "about", sql = "src.title || ' by it''s maker'" }]
            filters = [{ name = "tags", type = "keywords", sql = "src.tag" }, { name = "year", type = "integer" }]
            stored = [{ name = "url" }]
            dependents = [{ table = "public.work_tags", key_column = "work's id" }]
            "#,
        )
        .unwrap();
        Collection::from_config(&config, "c").unwrap()
    }

    #[test]
    fn statements_cast_keys_and_filters() {
        let shape = SourceShape {
            key_type: "integer".into(),
            filter_is_array: vec![false, false],
        };
        let s = Statements::new(&collection(), &shape);
        assert!(s.backfill_next.contains(r#"src."id" > $2::text::integer"#));
        assert!(!s.backfill_first.contains("$2"));
        assert!(s.sync_keys.contains("= ANY($1::text[]::integer[])"));
        assert!(
            s.sync_keys
                .contains("array_remove(ARRAY[((src.tag))::text], NULL) AS f0")
        );
        assert!(s.sync_keys.contains(r#"(src."year")::bigint AS f1"#));
        assert!(
            s.sync_keys
                .contains(r#"jsonb_build_object('url', to_jsonb(src."url"))"#)
        );
        // only the incremental path skips unchanged rows; the backfill always
        // writes a new version (mark and sweep depends on it)
        assert!(s.sync_keys.contains("WHERE d.deleted OR"));
        assert!(!s.backfill_first.contains("WHERE d.deleted OR"));
        assert!(s.write_vectors.contains("$8::vector[]"));
        let set = &s.write_vectors[..s.write_vectors.find(" FROM ").unwrap()];
        assert!(!set.contains("version"), "{set}");
    }

    #[test]
    fn trigger_ddl_quotes_arguments() {
        let c = collection();
        let ddl = trigger_ddl(&c.name, &c.dependents[0].table, &c.dependents[0].key_column);
        let create = ddl.iter().find(|s| s.contains("AFTER UPDATE")).unwrap();
        assert!(
            create.contains("quarry.search_enqueue('art', 'work''s id')"),
            "{create}"
        );
        assert!(create.contains("REFERENCING OLD TABLE AS quarry_old NEW TABLE AS quarry_new"));
        assert_eq!(ddl.len(), 8);
    }
}
