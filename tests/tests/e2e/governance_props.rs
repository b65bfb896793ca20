//! Isolation as a property (issue 13, item 8). For random policies over
//! `tate.artists` and `tate.artworks` (hidden columns, masks, row filters)
//! and random queries over what each policy shows:
//!
//! - ExecuteSql returns exactly the rows the same query returns when run
//!   directly, as the database superuser, over reference views that
//!   implement the policy independently of Quarry's rewrite (the views and
//!   their mask expressions are written here, not taken from govern.rs);
//! - no cell holds a raw value of a hidden or masked column;
//! - no artist or artwork outside the role's row filter appears;
//! - a query naming a hidden column is refused with PERMISSION_DENIED
//!   naming it.
//!
//! One server serves every generated policy, each as a role of its own (a
//! token carries one role, so the roles never combine). The policies come
//! from a seeded runner; the queries of each policy run under a seeded
//! proptest runner, which shrinks a failing query before reporting it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use quarry_proto::v1::ExecuteSqlRequest;
use quarry_proto::v1::value::Kind;
use quarry_tests::{Options, TestServer, authed, token_with_roles};
use tokio_postgres::SimpleQueryMessage;
use tonic::Code;

/// Policies generated, each served as a role.
const POLICIES: usize = 16;
/// Random queries (and hidden-column probes) run per policy.
const QUERIES_PER_POLICY: u32 = 64;
/// Seed of the policy runner; each policy's query runner uses it with its
/// last byte replaced by the policy's number.
const SEED: [u8; 32] = *b"quarry governance isolation prop";
/// `[policy] hash_salt`, which the reference views spell out.
const HASH_SALT: &str = "prop-salt-7c1e";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Text,
    /// Neither: booleans and numerics, always shown as they are.
    Other,
}

use Ty::{Int, Other, Text};

/// The columns of the governed tables, in catalog order (checked against
/// the database before the run).
const ARTISTS: &[(&str, Ty)] = &[
    ("id", Int),
    ("name", Text),
    ("sort_name", Text),
    ("gender", Text),
    ("birth_year", Int),
    ("death_year", Int),
    ("birth_place", Text),
    ("birth_country", Text),
    ("death_place", Text),
    ("death_country", Text),
    ("dates", Text),
    ("total_works", Int),
    ("url", Text),
    ("is_stub", Other),
];
const ARTWORKS: &[(&str, Ty)] = &[
    ("id", Int),
    ("accession_number", Text),
    ("title", Text),
    ("all_artists", Text),
    ("medium", Text),
    ("credit_line", Text),
    ("inscription", Text),
    ("date_text", Text),
    ("year_made", Int),
    ("year_made_end", Int),
    ("acquisition_year", Int),
    ("classification", Text),
    ("dimensions", Text),
    ("height_mm", Other),
    ("width_mm", Other),
    ("depth_mm", Other),
    ("foreign_title", Text),
    ("group_title", Text),
    ("url", Text),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Table {
    Artists,
    Artworks,
}

impl Table {
    const ALL: [Table; 2] = [Table::Artists, Table::Artworks];

    fn name(self) -> &'static str {
        match self {
            Table::Artists => "artists",
            Table::Artworks => "artworks",
        }
    }

    fn alias(self) -> &'static str {
        match self {
            Table::Artists => "a",
            Table::Artworks => "w",
        }
    }

    fn columns(self) -> &'static [(&'static str, Ty)] {
        match self {
            Table::Artists => ARTISTS,
            Table::Artworks => ARTWORKS,
        }
    }

    fn column(self, c: usize) -> &'static str {
        self.columns()[c].0
    }

    /// The row filter a policy may put on the table, with its bound.
    fn filter(self, bound: i32) -> String {
        match self {
            Table::Artists => format!("birth_year < {bound}"),
            Table::Artworks => format!("acquisition_year >= {bound}"),
        }
    }
}

/// A column: table and position.
type Col = (Table, usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mask {
    Redact,
    Null,
    Hash,
    KeepLast3,
    Bucket10,
}

impl Mask {
    /// As written in `[policy]`.
    fn config(self) -> &'static str {
        match self {
            Mask::Redact => "redact",
            Mask::Null => "null",
            Mask::Hash => "hash",
            Mask::KeepLast3 => "keep_last:3",
            Mask::Bucket10 => "bucket:10",
        }
    }

    /// What the policy documents the mask to show, written independently
    /// of govern.rs: the reference views' expression for `column`.
    fn reference(self, column: &str) -> String {
        match self {
            Mask::Redact => format!("CASE WHEN {column} IS NOT NULL THEN text '[redacted]' END"),
            Mask::Null => "CAST(NULL AS text)".to_owned(),
            Mask::Hash => format!("md5('{HASH_SALT}' || CAST({column} AS text))"),
            Mask::KeepLast3 => format!("'****' || right(CAST({column} AS text), 3)"),
            Mask::Bucket10 => format!("floor({column} / 10.0) * 10"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Show {
    Plain,
    Hidden,
    Masked(Mask),
}

#[derive(Clone, Debug)]
struct TablePolicy {
    /// One per column of the table.
    shows: Vec<Show>,
    /// Bound of the row filter, if any.
    filter: Option<i32>,
}

#[derive(Clone, Debug)]
struct Policy {
    artists: TablePolicy,
    artworks: TablePolicy,
}

impl Policy {
    fn of(&self, table: Table) -> &TablePolicy {
        match table {
            Table::Artists => &self.artists,
            Table::Artworks => &self.artworks,
        }
    }

    fn show(&self, (table, c): Col) -> Show {
        self.of(table).shows[c]
    }

    /// Shown columns of `table`, in order (what `SELECT *` returns).
    fn shown(&self, table: Table) -> Vec<Col> {
        (0..table.columns().len())
            .map(|c| (table, c))
            .filter(|&col| self.show(col) != Show::Hidden)
            .collect()
    }

    /// Shown integer and text columns: what queries compare, group, order
    /// and aggregate.
    fn usable(&self, table: Table) -> Vec<Col> {
        self.shown(table)
            .into_iter()
            .filter(|&(t, c)| t.columns()[c].1 != Other)
            .collect()
    }

    /// Hidden integer and text columns.
    fn hidden(&self) -> Vec<Col> {
        Table::ALL
            .into_iter()
            .flat_map(|t| (0..t.columns().len()).map(move |c| (t, c)))
            .filter(|&col| self.show(col) == Show::Hidden)
            .collect()
    }

    /// The type a query sees.
    fn ty(&self, (table, c): Col) -> Ty {
        match self.show((table, c)) {
            Show::Plain | Show::Hidden => table.columns()[c].1,
            Show::Masked(Mask::Bucket10) => Int,
            Show::Masked(_) => Text,
        }
    }

    /// Whether both `id` columns are shown as they are (the join keys).
    fn joinable(&self) -> bool {
        self.show((Table::Artists, 0)) == Show::Plain
            && self.show((Table::Artworks, 0)) == Show::Plain
    }

    /// `[policy.roles.<role>]`.
    fn toml(&self, role: &str) -> String {
        let mut deny = Vec::new();
        let mut masks = Vec::new();
        let mut filters = Vec::new();
        for table in Table::ALL {
            for (c, (column, _)) in table.columns().iter().enumerate() {
                let name = format!("tate.{}.{column}", table.name());
                match self.show((table, c)) {
                    Show::Plain => {}
                    Show::Hidden => deny.push(format!("\"{name}\"")),
                    Show::Masked(mask) => masks.push(format!("\"{name}\" = \"{}\"", mask.config())),
                }
            }
            if let Some(bound) = self.of(table).filter {
                filters.push(format!(
                    "\"tate.{}\" = \"{}\"",
                    table.name(),
                    table.filter(bound)
                ));
            }
        }
        format!(
            "[policy.roles.{role}]\n\
             scopes = [\"sql:query\"]\n\
             tables = [\"tate.artists\", \"tate.artworks\", \"tate.artwork_contributors\"]\n\
             deny_columns = [{}]\n\
             masks = {{ {} }}\n\
             row_filters = {{ {} }}\n",
            deny.join(", "),
            masks.join(", "),
            filters.join(", ")
        )
    }

    /// The reference: schema `schema` with one view per table showing what
    /// the policy lets the role see.
    fn reference_views(&self, schema: &str) -> String {
        let mut sql = format!("CREATE SCHEMA {schema};\n");
        for table in Table::ALL {
            let columns: Vec<String> = self
                .shown(table)
                .into_iter()
                .map(|(t, c)| {
                    let column = t.column(c);
                    match self.show((t, c)) {
                        Show::Masked(mask) => format!("{} AS {column}", mask.reference(column)),
                        Show::Plain | Show::Hidden => column.to_owned(),
                    }
                })
                .collect();
            let filter = self
                .of(table)
                .filter
                .map(|bound| format!(" WHERE {}", table.filter(bound)))
                .unwrap_or_default();
            writeln!(
                sql,
                "CREATE VIEW {schema}.{name} AS SELECT {} FROM tate.{name}{filter};",
                columns.join(", "),
                name = table.name()
            )
            .unwrap();
        }
        writeln!(
            sql,
            "CREATE VIEW {schema}.artwork_contributors AS SELECT * FROM tate.artwork_contributors;"
        )
        .unwrap();
        sql
    }
}

fn show_strategy(ty: Ty) -> BoxedStrategy<Show> {
    let masked = |m| Just(Show::Masked(m));
    match ty {
        Other => Just(Show::Plain).boxed(),
        Text => prop_oneof![
            8 => Just(Show::Plain),
            3 => Just(Show::Hidden),
            1 => masked(Mask::Redact),
            1 => masked(Mask::Null),
            1 => masked(Mask::Hash),
            1 => masked(Mask::KeepLast3),
        ]
        .boxed(),
        Int => prop_oneof![
            8 => Just(Show::Plain),
            3 => Just(Show::Hidden),
            1 => masked(Mask::Redact),
            1 => masked(Mask::Null),
            1 => masked(Mask::Hash),
            1 => masked(Mask::KeepLast3),
            2 => masked(Mask::Bucket10),
        ]
        .boxed(),
    }
}

fn table_policy(table: Table) -> impl Strategy<Value = TablePolicy> {
    let shows: Vec<BoxedStrategy<Show>> = table
        .columns()
        .iter()
        .map(|(_, ty)| show_strategy(*ty))
        .collect();
    let bounds = match table {
        Table::Artists => 1750..1950,
        Table::Artworks => 1880..1930,
    };
    (shows, proptest::option::weighted(0.6, bounds))
        .prop_map(|(shows, filter)| TablePolicy { shows, filter })
        .prop_filter("shows two integer or text columns", move |p| {
            p.shows
                .iter()
                .zip(table.columns())
                .filter(|(s, (_, ty))| **s != Show::Hidden && *ty != Other)
                .count()
                >= 2
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (table_policy(Table::Artists), table_policy(Table::Artworks))
        .prop_map(|(artists, artworks)| Policy { artists, artworks })
}

/// How a single-table query names its table and columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Naming {
    /// `FROM artists`, `name`.
    Bare,
    /// `FROM tate.artists`, `name`.
    Qualified,
    /// `FROM tate.artists AS a`, `a.name`.
    Alias,
    /// `FROM tate.artists`, `artists.name`.
    TableDot,
    /// `FROM tate.artists`, `tate.artists.name`.
    SchemaDot,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    One(Table, Naming),
    /// artworks `w` – artwork_contributors `c` – artists `a`.
    Join,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Ne,
    Lt,
    Ge,
    Like,
    IsNull,
    IsNotNull,
}

#[derive(Clone, Debug)]
struct Pred {
    col: Col,
    op: Op,
    /// The literal as SQL.
    literal: String,
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Col(Col),
    CountStar,
    Min(Col),
    Max(Col),
    CountDistinct(Col),
    /// The whole row of a table, as a record.
    Row(Table),
}

#[derive(Clone, Debug)]
enum Select {
    Star,
    Items(Vec<Item>),
}

/// How the query is nested.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    None,
    /// `SELECT * FROM (<query>) AS q`.
    Derived,
    /// `WITH q AS (<query>) SELECT * FROM q`.
    Cte,
}

#[derive(Clone, Debug)]
struct Query {
    from: Source,
    select: Select,
    pred: Option<Pred>,
    /// Single-table queries of a joinable policy: keep only the rows with a
    /// contributor (artworks) or a contribution (artists) the role sees,
    /// through a correlated `EXISTS` over the other table.
    exists: bool,
    group: Option<Col>,
    order: Option<Col>,
    limit: Option<u32>,
    wrap: Wrap,
}

impl Query {
    fn col(&self, (table, c): Col, schema: &str) -> String {
        let name = table.column(c);
        match self.from {
            Source::Join | Source::One(_, Naming::Alias) => format!("{}.{name}", table.alias()),
            Source::One(_, Naming::Bare | Naming::Qualified) => name.to_owned(),
            Source::One(_, Naming::TableDot) => format!("{}.{name}", table.name()),
            Source::One(_, Naming::SchemaDot) => format!("{schema}.{}.{name}", table.name()),
        }
    }

    fn item(&self, item: Item, schema: &str) -> String {
        match item {
            Item::Col(c) => self.col(c, schema),
            Item::CountStar => "count(*)".to_owned(),
            Item::Min(c) => format!("min({})", self.col(c, schema)),
            Item::Max(c) => format!("max({})", self.col(c, schema)),
            Item::CountDistinct(c) => format!("count(DISTINCT {})", self.col(c, schema)),
            Item::Row(table) => match self.from {
                Source::Join | Source::One(_, Naming::Alias) => table.alias().to_owned(),
                Source::One(..) => table.name().to_owned(),
            },
        }
    }

    /// The query over the tables of `schema`; a [`Naming::Bare`] query
    /// relies on the search path.
    fn sql(&self, policy: &Policy, schema: &str) -> String {
        let select = match &self.select {
            Select::Star => "*".to_owned(),
            Select::Items(items) => items
                .iter()
                .map(|i| self.item(*i, schema))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let from = match self.from {
            Source::One(t, Naming::Bare) => t.name().to_owned(),
            Source::One(t, Naming::Alias) => format!("{schema}.{} AS {}", t.name(), t.alias()),
            Source::One(t, _) => format!("{schema}.{}", t.name()),
            Source::Join => format!(
                "{schema}.artworks AS w \
                 JOIN {schema}.artwork_contributors AS c ON c.artwork_id = w.id \
                 JOIN {schema}.artists AS a ON a.id = c.artist_id"
            ),
        };
        let mut sql = format!("SELECT {select} FROM {from}");
        let mut conditions = Vec::new();
        if let (true, Source::One(table, _)) = (self.exists, self.from) {
            let outer = self.col((table, 0), schema);
            conditions.push(match table {
                Table::Artists => format!(
                    "EXISTS (SELECT 1 FROM {schema}.artwork_contributors AS c \
                     JOIN {schema}.artworks AS w ON w.id = c.artwork_id WHERE c.artist_id = {outer})"
                ),
                Table::Artworks => format!(
                    "EXISTS (SELECT 1 FROM {schema}.artwork_contributors AS c \
                     JOIN {schema}.artists AS a ON a.id = c.artist_id WHERE c.artwork_id = {outer})"
                ),
            });
        }
        if let Some(pred) = &self.pred {
            let column = self.col(pred.col, schema);
            let literal = &pred.literal;
            let condition = match pred.op {
                Op::Eq => format!("{column} = {literal}"),
                Op::Ne => format!("{column} <> {literal}"),
                Op::Lt => format!("{column} < {literal}"),
                Op::Ge => format!("{column} >= {literal}"),
                Op::Like => format!("{column} LIKE {literal}"),
                Op::IsNull => format!("{column} IS NULL"),
                Op::IsNotNull => format!("{column} IS NOT NULL"),
            };
            conditions.push(condition);
        }
        if !conditions.is_empty() {
            write!(sql, " WHERE {}", conditions.join(" AND ")).unwrap();
        }
        if let Some(group) = self.group {
            write!(sql, " GROUP BY {}", self.col(group, schema)).unwrap();
        }
        if let Some(order) = self.order {
            write!(sql, " ORDER BY {}", self.col(order, schema)).unwrap();
            if self.limit.is_some() {
                // ties broken by every output column: the rows kept are
                // then the same, whichever of the tied rows comes first
                for position in 1..=self.outputs(policy).len() {
                    write!(sql, ", {position}").unwrap();
                }
            }
        }
        if let Some(limit) = self.limit {
            write!(sql, " LIMIT {limit}").unwrap();
        }
        match self.wrap {
            Wrap::None => sql,
            Wrap::Derived => format!("SELECT * FROM ({sql}) AS q"),
            Wrap::Cte => format!("WITH q AS ({sql}) SELECT * FROM q"),
        }
    }

    /// The column each output shows values of (aggregates `min` and `max`
    /// included), `None` for counts and rows.
    fn outputs(&self, policy: &Policy) -> Vec<Option<Col>> {
        match &self.select {
            Select::Star => match self.from {
                Source::One(t, _) => policy.shown(t).into_iter().map(Some).collect(),
                Source::Join => {
                    let mut out: Vec<Option<Col>> = policy
                        .shown(Table::Artworks)
                        .into_iter()
                        .map(Some)
                        .collect();
                    out.extend([None; 4]);
                    out.extend(policy.shown(Table::Artists).into_iter().map(Some));
                    out
                }
            },
            Select::Items(items) => items
                .iter()
                .map(|i| match i {
                    Item::Col(c) | Item::Min(c) | Item::Max(c) => Some(*c),
                    Item::CountStar | Item::CountDistinct(_) | Item::Row(_) => None,
                })
                .collect(),
        }
    }
}

/// A generated case.
#[derive(Clone, Debug)]
enum Case {
    /// A query over shown columns: compared with the reference.
    Query(Query),
    /// A query naming a hidden column in its select list, `WHERE` or
    /// `GROUP BY` (shape 0, 1, 2): refused.
    Hidden { col: Col, shape: u8 },
}

impl Case {
    fn sql(&self, policy: &Policy, schema: &str) -> String {
        match self {
            Case::Query(q) => q.sql(policy, schema),
            Case::Hidden {
                col: (table, c),
                shape,
            } => {
                let (t, column) = (table.name(), table.column(*c));
                match shape {
                    0 => format!("SELECT {column} FROM {schema}.{t}"),
                    1 => format!("SELECT count(*) FROM {schema}.{t} WHERE {column} IS NOT NULL"),
                    _ => format!("SELECT count(*) FROM {schema}.{t} GROUP BY {column}"),
                }
            }
        }
    }
}

/// Raw values of each integer and text column, as text: the literals of
/// predicates.
type Pools = HashMap<Col, Vec<String>>;

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn pred_strategy(cols: Vec<Col>, policy: Arc<Policy>, pools: Arc<Pools>) -> BoxedStrategy<Pred> {
    select(cols)
        .prop_flat_map(move |col| {
            let ty = policy.ty(col);
            let mut values = pools.get(&col).cloned().unwrap_or_default();
            if ty == Text {
                values.extend(["[redacted]".to_owned(), "****".to_owned()]);
            }
            if values.is_empty() {
                values.push("0".to_owned());
            }
            let ops = match ty {
                Int | Other => vec![Op::Eq, Op::Ne, Op::Lt, Op::Ge, Op::IsNull, Op::IsNotNull],
                Text => vec![Op::Eq, Op::Ne, Op::Lt, Op::Like, Op::IsNull, Op::IsNotNull],
            };
            (select(ops), select(values)).prop_map(move |(op, value)| {
                let literal = match (ty, op) {
                    (Text, Op::Like) => {
                        quote(&format!("{}%", value.chars().take(2).collect::<String>()))
                    }
                    (Text, _) => quote(&value),
                    (Int | Other, _) => value,
                };
                Pred { col, op, literal }
            })
        })
        .boxed()
}

/// Queries over `from`, whose usable columns are `cols`; `exists`: whether
/// [`Query::exists`] may be set.
fn query_strategy(
    from: BoxedStrategy<Source>,
    exists: bool,
    rows: Vec<Table>,
    cols: Vec<Col>,
    policy: &Arc<Policy>,
    pools: &Arc<Pools>,
) -> BoxedStrategy<Query> {
    let col = {
        let cols = cols.clone();
        move || select(cols.clone())
    };
    let aggregate = {
        let col = col.clone();
        move || {
            prop_oneof![
                Just(Item::CountStar),
                col().prop_map(Item::Min),
                col().prop_map(Item::Max),
                col().prop_map(Item::CountDistinct),
            ]
        }
    };
    let pred = {
        let (cols, policy, pools) = (cols.clone(), policy.clone(), pools.clone());
        move || proptest::option::of(pred_strategy(cols.clone(), policy.clone(), pools.clone()))
    };
    let limit = || proptest::option::weighted(0.4, 1u32..20);
    let first = cols[0];
    let listed = prop_oneof![
        4 => col().prop_map(Item::Col),
        1 => select(rows).prop_map(Item::Row),
    ];
    let plain = (
        from.clone(),
        prop_oneof![
            1 => Just(Select::Star),
            3 => proptest::collection::vec(listed, 1..4).prop_map(Select::Items),
        ],
        pred(),
        proptest::option::of(col()),
        limit(),
    )
        .prop_map(move |(from, select, pred, order, limit)| Query {
            from,
            select,
            pred,
            exists: false,
            group: None,
            order: order.or(limit.map(|_| first)),
            limit,
            wrap: Wrap::None,
        });
    let aggregated = (
        from.clone(),
        proptest::collection::vec(aggregate(), 1..3),
        pred(),
    )
        .prop_map(|(from, items, pred)| Query {
            from,
            select: Select::Items(items),
            pred,
            exists: false,
            group: None,
            order: None,
            limit: None,
            wrap: Wrap::None,
        });
    let grouped = (
        from,
        col(),
        proptest::collection::vec(aggregate(), 0..3),
        pred(),
        any::<bool>(),
        limit(),
    )
        .prop_map(|(from, key, aggregates, pred, ordered, limit)| {
            let mut items = vec![Item::Col(key)];
            items.extend(aggregates);
            Query {
                from,
                select: Select::Items(items),
                pred,
                exists: false,
                group: Some(key),
                order: (ordered || limit.is_some()).then_some(key),
                limit,
                wrap: Wrap::None,
            }
        });
    let exists = if exists { 0.3 } else { 0.0 };
    let wrap = prop_oneof![4 => Just(Wrap::None), 1 => Just(Wrap::Derived), 1 => Just(Wrap::Cte)];
    (
        prop_oneof![3 => plain, 2 => aggregated, 2 => grouped],
        proptest::bool::weighted(exists),
        wrap,
    )
        .prop_map(|(query, exists, wrap)| Query {
            exists,
            wrap,
            ..query
        })
        .boxed()
}

fn case_strategy(policy: &Arc<Policy>, pools: &Arc<Pools>) -> BoxedStrategy<Case> {
    let mut options: Vec<BoxedStrategy<Case>> = Vec::new();
    for table in Table::ALL {
        let naming = select(vec![
            Naming::Bare,
            Naming::Qualified,
            Naming::Alias,
            Naming::TableDot,
            Naming::SchemaDot,
        ]);
        let from = naming.prop_map(move |n| Source::One(table, n)).boxed();
        let queries = query_strategy(
            from,
            policy.joinable(),
            vec![table],
            policy.usable(table),
            policy,
            pools,
        );
        options.push(queries.prop_map(Case::Query).boxed());
    }
    if policy.joinable() {
        let mut cols = policy.usable(Table::Artworks);
        cols.extend(policy.usable(Table::Artists));
        let queries = query_strategy(
            Just(Source::Join).boxed(),
            false,
            Table::ALL.to_vec(),
            cols,
            policy,
            pools,
        );
        options.push(queries.prop_map(Case::Query).boxed());
    }
    let hidden = policy.hidden();
    if !hidden.is_empty() {
        options.push(
            (select(hidden), 0u8..3)
                .prop_map(|(col, shape)| Case::Hidden { col, shape })
                .boxed(),
        );
    }
    Union::new(options).boxed()
}

type Rows = Vec<Vec<Option<String>>>;

/// Rows of `sql` run through ExecuteSql with `token`, each cell in
/// PostgreSQL's text form, and whether the result was truncated.
async fn quarry_rows(
    server: &TestServer,
    token: &str,
    sql: &str,
) -> Result<(Rows, bool), tonic::Status> {
    let response = server
        .sql()
        .execute_sql(authed(
            ExecuteSqlRequest {
                sql: sql.into(),
                ..Default::default()
            },
            token,
        ))
        .await?
        .into_inner();
    let result = response.result.unwrap_or_default();
    let rows = result
        .rows
        .iter()
        .map(|row| {
            row.values
                .iter()
                .map(|v| match &v.kind {
                    Some(Kind::TextValue(s) | Kind::DecimalValue(s) | Kind::JsonValue(s)) => {
                        Some(s.clone())
                    }
                    Some(Kind::Int64Value(n)) => Some(n.to_string()),
                    Some(Kind::DoubleValue(f)) => Some(f.to_string()),
                    Some(Kind::BoolValue(b)) => Some(if *b { "t" } else { "f" }.to_owned()),
                    Some(Kind::NullValue(_)) | None => None,
                    Some(other) => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect();
    Ok((rows, result.truncated))
}

/// Rows of `sql` over `client`, in PostgreSQL's text form.
async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Result<Rows, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(messages
        .iter()
        .filter_map(|m| {
            if let SimpleQueryMessage::Row(row) = m {
                Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                )
            } else {
                None
            }
        })
        .collect())
}

/// What one policy's cases are checked with.
struct Env<'a> {
    server: &'a TestServer,
    token: String,
    policy: Arc<Policy>,
    /// A superuser connection whose search path is the reference schema.
    reference: tokio_postgres::Client,
    schema: String,
    /// Raw values of hidden and masked columns that no shown column holds
    /// (four characters or more: no count or small number).
    forbidden: HashSet<String>,
    /// Per filtered table, the ids its row filter lets through.
    allowed_ids: HashMap<Table, HashSet<String>>,
}

impl Env<'_> {
    async fn check(&self, case: &Case) -> Result<(), String> {
        let sql = case.sql(&self.policy, "tate");
        let got = quarry_rows(self.server, &self.token, &sql).await;
        let query = match case {
            Case::Hidden { col: (t, c), .. } => {
                let object = format!("column tate.{}.{}", t.name(), t.column(*c));
                return match got {
                    Err(s)
                        if s.code() == Code::PermissionDenied && s.message().contains(&object) =>
                    {
                        Ok(())
                    }
                    Err(s) => Err(format!(
                        "{sql}: expected PERMISSION_DENIED naming {object}, got {:?}: {}",
                        s.code(),
                        s.message()
                    )),
                    Ok((rows, _)) => Err(format!(
                        "{sql}: hidden column answered, {} rows: {:?}",
                        rows.len(),
                        rows.iter().take(3).collect::<Vec<_>>()
                    )),
                };
            }
            Case::Query(q) => q,
        };
        let (mut got, truncated) =
            got.map_err(|s| format!("{sql}: ExecuteSql failed: {:?}: {}", s.code(), s.message()))?;
        if truncated {
            return Err(format!(
                "{sql}: truncated; the generator must keep results small"
            ));
        }
        // safety, independent of the reference
        for row in &got {
            for cell in row.iter().flatten() {
                if self.forbidden.contains(cell) {
                    return Err(format!(
                        "{sql}: a raw value of a hidden or masked column came back: {cell:?}"
                    ));
                }
            }
        }
        for (position, output) in query.outputs(&self.policy).iter().enumerate() {
            let Some((table, 0)) = output else { continue };
            if self.policy.show((*table, 0)) != Show::Plain {
                continue;
            }
            let Some(allowed) = self.allowed_ids.get(table) else {
                continue;
            };
            for row in &got {
                if let Some(id) = &row[position]
                    && !allowed.contains(id)
                {
                    return Err(format!(
                        "{sql}: {} {id} is outside the row filter {}",
                        table.name(),
                        table.filter(self.policy.of(*table).filter.unwrap_or_default())
                    ));
                }
            }
        }
        // the same query over the reference views
        let reference_sql = query.sql(&self.policy, &self.schema);
        let mut want = text_rows(&self.reference, &reference_sql)
            .await
            .map_err(|e| format!("{reference_sql}: the reference failed: {e}"))?;
        got.sort();
        want.sort();
        if got != want {
            let only_got: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
            let only_want: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
            return Err(format!(
                "{sql}: {} rows from Quarry, {} from the reference ({reference_sql}); \
                 only in Quarry's: {only_got:?}; only in the reference's: {only_want:?}",
                got.len(),
                want.len()
            ));
        }
        Ok(())
    }
}

/// Every non-null cell of `sql`'s rows.
async fn cells(client: &tokio_postgres::Client, sql: &str) -> HashSet<String> {
    text_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}

async fn env<'a>(server: &'a TestServer, n: usize, policy: &Arc<Policy>) -> Env<'a> {
    let schema = format!("ref_{n}");
    let (reference, connection) = tokio_postgres::connect(server.db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    reference
        .batch_execute(&policy.reference_views(&schema))
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}", policy.reference_views(&schema)));
    reference
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .unwrap();
    let mut forbidden = HashSet::new();
    let mut allowed_ids = HashMap::new();
    for table in Table::ALL {
        for (c, (column, ty)) in table.columns().iter().enumerate() {
            if policy.show((table, c)) != Show::Plain && *ty != Other {
                let sql = format!("SELECT DISTINCT {column}::text FROM tate.{}", table.name());
                forbidden.extend(cells(&reference, &sql).await);
            }
        }
        if let Some(bound) = policy.of(table).filter {
            let sql = format!(
                "SELECT id::text FROM tate.{} WHERE {}",
                table.name(),
                table.filter(bound)
            );
            allowed_ids.insert(table, cells(&reference, &sql).await);
        }
    }
    let mut shown = HashSet::new();
    for view in ["artists", "artworks", "artwork_contributors"] {
        shown.extend(cells(&reference, &format!("SELECT * FROM {schema}.{view}")).await);
    }
    forbidden.retain(|v| v.chars().count() >= 4 && !shown.contains(v));
    let role = format!("p{n}");
    Env {
        server,
        token: token_with_roles("t1", "prop", &[role.as_str()], &[]),
        policy: policy.clone(),
        reference,
        schema,
        forbidden,
        allowed_ids,
    }
}

/// Raw values of every integer and text column of the governed tables (up
/// to 40 each, spread by hash).
async fn pools(client: &tokio_postgres::Client) -> Pools {
    let mut pools = Pools::new();
    for table in Table::ALL {
        for (c, (column, ty)) in table.columns().iter().enumerate() {
            if *ty == Other {
                continue;
            }
            let sql = format!(
                "SELECT v FROM (SELECT DISTINCT {column}::text AS v FROM tate.{} \
                 WHERE {column} IS NOT NULL) d ORDER BY md5(v) LIMIT 40",
                table.name()
            );
            let values = text_rows(client, &sql).await.unwrap();
            pools.insert((table, c), values.into_iter().flatten().flatten().collect());
        }
    }
    pools
}

#[test]
fn queries_see_only_what_random_policies_show() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &SEED),
    );
    let policies: Vec<Arc<Policy>> = (0..POLICIES)
        .map(|_| Arc::new(policy_strategy().new_tree(&mut runner).unwrap().current()))
        .collect();
    let mut toml = format!("[policy]\nhash_salt = \"{HASH_SALT}\"\n");
    for (n, policy) in policies.iter().enumerate() {
        toml.push_str(&policy.toml(&format!("p{n}")));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start(Options {
        extra_toml: toml.clone(),
        ..Options::default()
    }));
    let (admin, connection) = rt
        .block_on(tokio_postgres::connect(
            server.db.url(),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(connection);
    // the column lists above are the tables' own, in order
    for table in Table::ALL {
        let sql = format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = 'tate' AND table_name = '{}' ORDER BY ordinal_position",
            table.name()
        );
        let actual: Vec<String> = rt
            .block_on(text_rows(&admin, &sql))
            .unwrap()
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        let expected: Vec<&str> = table.columns().iter().map(|(c, _)| *c).collect();
        assert_eq!(actual, expected, "columns of tate.{}", table.name());
    }
    let pools = Arc::new(rt.block_on(pools(&admin)));
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, policy) in policies.iter().enumerate() {
        let env = rt.block_on(env(&server, n, policy));
        let mut seed = SEED;
        seed[31] = u8::try_from(n).unwrap();
        let config = Config {
            cases: QUERIES_PER_POLICY,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        };
        let mut queries =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let strategy = case_strategy(policy, &pools);
        let result = queries.run(&strategy, |case| {
            rt.block_on(env.check(&case)).map_err(TestCaseError::fail)
        });
        checked += QUERIES_PER_POLICY;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, case)) => failures.push(format!(
                "policy p{n}:\n{}minimal case: {case:?}\n{reason}",
                policy.toml(&format!("p{n}"))
            )),
            Err(TestError::Abort(reason)) => {
                failures.push(format!("policy p{n}: aborted: {reason}"))
            }
        }
    }
    rt.block_on(server.stop());
    assert!(
        failures.is_empty(),
        "{} of {POLICIES} policies failed ({checked} cases):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
