//! DDL of the Tate schema: tables (created bare for a fast COPY), the
//! constraints and indexes added after the load, and the comments a language
//! model reads to write SQL against it.
//!
//! Every statement uses the placeholder `{s}` for the quoted schema name.

/// The tables, children first (the order they are dropped in).
pub(crate) const TABLES: [&str; 8] = [
    "artwork_movements",
    "artist_movements",
    "artwork_subjects",
    "artwork_contributors",
    "subjects",
    "movements",
    "artworks",
    "artists",
];

/// Tables without keys or indexes; `height_mm`, `width_mm`, `depth_mm` start
/// as float8 (what binary COPY sends) and become numeric afterwards.
pub(crate) const CREATE: &str = r#"
CREATE TABLE {s}.artists (
    id integer NOT NULL,
    name text NOT NULL,
    sort_name text,
    gender text,
    birth_year integer,
    death_year integer,
    birth_place text,
    birth_country text,
    death_place text,
    death_country text,
    dates text,
    total_works integer,
    url text,
    is_stub boolean NOT NULL
);
CREATE TABLE {s}.artworks (
    id integer NOT NULL,
    accession_number text NOT NULL,
    title text NOT NULL,
    all_artists text,
    medium text,
    credit_line text,
    inscription text,
    date_text text,
    year_made integer,
    year_made_end integer,
    acquisition_year integer,
    classification text,
    dimensions text,
    height_mm double precision,
    width_mm double precision,
    depth_mm double precision,
    foreign_title text,
    group_title text,
    url text
);
CREATE TABLE {s}.artwork_contributors (
    artwork_id integer NOT NULL,
    artist_id integer NOT NULL,
    role text NOT NULL,
    position integer NOT NULL
);
CREATE TABLE {s}.subjects (
    id integer NOT NULL,
    name text NOT NULL,
    parent_id integer,
    level integer NOT NULL,
    path text NOT NULL
);
CREATE TABLE {s}.artwork_subjects (
    artwork_id integer NOT NULL,
    subject_id integer NOT NULL
);
CREATE TABLE {s}.movements (
    id integer NOT NULL,
    name text NOT NULL
);
CREATE TABLE {s}.artist_movements (
    artist_id integer NOT NULL,
    movement_id integer NOT NULL
);
CREATE TABLE {s}.artwork_movements (
    artwork_id integer NOT NULL,
    movement_id integer NOT NULL
);
"#;

/// Types, keys, foreign keys and indexes, run after the data is in.
pub(crate) const FINISH: &str = r#"
ALTER TABLE {s}.artworks
    ALTER COLUMN height_mm TYPE numeric USING height_mm::numeric,
    ALTER COLUMN width_mm TYPE numeric USING width_mm::numeric,
    ALTER COLUMN depth_mm TYPE numeric USING depth_mm::numeric;
ALTER TABLE {s}.artists ADD PRIMARY KEY (id);
ALTER TABLE {s}.artworks ADD PRIMARY KEY (id),
    ADD CONSTRAINT artworks_accession_number_key UNIQUE (accession_number);
ALTER TABLE {s}.subjects ADD PRIMARY KEY (id),
    ADD CONSTRAINT subjects_path_key UNIQUE (path),
    ADD CONSTRAINT subjects_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES {s}.subjects (id);
ALTER TABLE {s}.movements ADD PRIMARY KEY (id),
    ADD CONSTRAINT movements_name_key UNIQUE (name);
ALTER TABLE {s}.artwork_contributors ADD PRIMARY KEY (artwork_id, artist_id, role),
    ADD CONSTRAINT artwork_contributors_artwork_id_fkey FOREIGN KEY (artwork_id) REFERENCES {s}.artworks (id),
    ADD CONSTRAINT artwork_contributors_artist_id_fkey FOREIGN KEY (artist_id) REFERENCES {s}.artists (id);
ALTER TABLE {s}.artwork_subjects ADD PRIMARY KEY (artwork_id, subject_id),
    ADD CONSTRAINT artwork_subjects_artwork_id_fkey FOREIGN KEY (artwork_id) REFERENCES {s}.artworks (id),
    ADD CONSTRAINT artwork_subjects_subject_id_fkey FOREIGN KEY (subject_id) REFERENCES {s}.subjects (id);
ALTER TABLE {s}.artist_movements ADD PRIMARY KEY (artist_id, movement_id),
    ADD CONSTRAINT artist_movements_artist_id_fkey FOREIGN KEY (artist_id) REFERENCES {s}.artists (id),
    ADD CONSTRAINT artist_movements_movement_id_fkey FOREIGN KEY (movement_id) REFERENCES {s}.movements (id);
ALTER TABLE {s}.artwork_movements ADD PRIMARY KEY (artwork_id, movement_id),
    ADD CONSTRAINT artwork_movements_artwork_id_fkey FOREIGN KEY (artwork_id) REFERENCES {s}.artworks (id),
    ADD CONSTRAINT artwork_movements_movement_id_fkey FOREIGN KEY (movement_id) REFERENCES {s}.movements (id);
CREATE INDEX artworks_acquisition_year_idx ON {s}.artworks (acquisition_year);
CREATE INDEX artworks_year_made_idx ON {s}.artworks (year_made);
CREATE INDEX artworks_classification_idx ON {s}.artworks (classification);
CREATE INDEX artwork_contributors_artist_id_idx ON {s}.artwork_contributors (artist_id);
CREATE INDEX artists_lower_name_idx ON {s}.artists (lower(name));
CREATE INDEX subjects_name_idx ON {s}.subjects (name);
CREATE INDEX subjects_parent_id_idx ON {s}.subjects (parent_id);
CREATE INDEX artwork_subjects_subject_id_idx ON {s}.artwork_subjects (subject_id);
CREATE INDEX artist_movements_movement_id_idx ON {s}.artist_movements (movement_id);
CREATE INDEX artwork_movements_movement_id_idx ON {s}.artwork_movements (movement_id);
"#;

/// The table of demo tenants. Unlike the tables of [`TABLES`] it is kept
/// across loads (`IF NOT EXISTS`): it is access configuration, not
/// collection data, so tenants an operator added survive a reload.
pub(crate) const TENANT_ERAS: &str = r#"
CREATE TABLE IF NOT EXISTS {s}.tenant_eras (
    tenant text PRIMARY KEY,
    from_year integer,
    to_year integer,
    CHECK (from_year <= to_year)
);
"#;

/// Row-level security over `artworks`, run after the load (the loader, as
/// the tables' owner, is not subject to it anyway): the demo tenants (rows
/// already there are left alone), and the policies that read the tenant
/// Quarry sets in every request's transaction (`quarry.tenant`, with
/// `set_config(…, true)`, the transaction-local `SET LOCAL`).
///
/// - A tenant sees the artworks acquired in its era, bounds inclusive, a
///   null bound open; artworks with no acquisition year only with both
///   bounds null (all eras). The demo tenants: `demo` (what `dev/demo.sh`
///   mints), `acme` (the README's) and `bench` (`quarry bench ask`'s) see
///   every era, `modern` the works acquired in 1950 or later, `early` the
///   works acquired before 1950.
/// - The era is looked up by uncorrelated subqueries, which PostgreSQL runs
///   once per query (init plans), not once per row.
/// - A tenant without a row sees nothing (default deny).
/// - A transaction with no tenant (`quarry.tenant` unset, NULL, or `''`,
///   what an ended `SET LOCAL` leaves) sees every row. That is Quarry's own
///   background work: the summary builder (as `summary.role`), the search
///   index sync (as the login role), operator commands. It is safe because
///   only Quarry can act as the `NOLOGIN` read role (the login role is its
///   only member), and every request transaction sets a non-empty tenant:
///   a token must carry one, and the SQL validator refuses `set_config` and
///   anything that is not a query (`SET`, `RESET`, `SET ROLE`), so a
///   request cannot clear or change it.
/// - `tenant_eras` itself is under the same rule: a tenant reads only its
///   own row.
///
/// The policies are `FOR ALL`, so a writer that sets no tenant (a loader,
/// an ETL role) may still write. Row security is enabled but not forced:
/// the owner of the tables (the role that loaded them) bypasses it, as
/// PostgreSQL intends, and queries never run as the owner — they run as the
/// read role, which owns nothing and has no `BYPASSRLS` (Quarry refuses to
/// start otherwise, outside development). Forcing it would also make the
/// owner's `pg_dump` fail (row security is off in a dump).
pub(crate) const TENANCY: &str = r#"
INSERT INTO {s}.tenant_eras (tenant, from_year, to_year) VALUES
    ('demo', NULL, NULL),
    ('acme', NULL, NULL),
    ('bench', NULL, NULL),
    ('modern', 1950, NULL),
    ('early', NULL, 1949)
ON CONFLICT (tenant) DO NOTHING;
ALTER TABLE {s}.tenant_eras ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_eras_own ON {s}.tenant_eras;
CREATE POLICY tenant_eras_own ON {s}.tenant_eras
    USING (coalesce(current_setting('quarry.tenant', true), '') IN ('', tenant));
ALTER TABLE {s}.artworks ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_era ON {s}.artworks;
CREATE POLICY tenant_era ON {s}.artworks
    USING (
        coalesce(current_setting('quarry.tenant', true), '') = ''
        OR CASE
            WHEN artworks.acquisition_year IS NULL THEN
                (SELECT int4range(e.from_year, e.to_year, '[]') FROM {s}.tenant_eras e
                  WHERE e.tenant = current_setting('quarry.tenant', true)) = '(,)'::int4range
            ELSE
                (SELECT int4range(e.from_year, e.to_year, '[]') FROM {s}.tenant_eras e
                  WHERE e.tenant = current_setting('quarry.tenant', true))
                @> artworks.acquisition_year
        END
    );
"#;

/// `(table, None | Some(column), comment)`: what a model needs to use each
/// table and column — meaning, units, example values, how to join.
pub(crate) const COMMENTS: &[(&str, Option<&str>, &str)] = &[
    // artists
    (
        "artists",
        None,
        "Artists in the Tate collection (Tate's 2014 open data, CC0), one row per artist. \
         Join to works through artwork_contributors (artists.id = artwork_contributors.artist_id). \
         A few rows (is_stub = true) are artists named as contributors of an artwork but missing \
         from Tate's artist list; only id, name, gender and birth_year are known for them.",
    ),
    (
        "artists",
        Some("id"),
        "Tate artist id, primary key, e.g. 558 (Joseph Mallord William Turner).",
    ),
    (
        "artists",
        Some("name"),
        "Display name, first name first, e.g. 'Joseph Mallord William Turner', 'Bridget Riley', \
         'Dame Barbara Hepworth', 'Henry Moore OM, CH'. Names can carry titles and honours ('Sir', \
         'Dame', 'OM', 'RA', 'Bt'), so match a surname with ILIKE, e.g. name ILIKE '%hepworth%'; match \
         a full name case-insensitively with lower(name) = lower('Bridget Riley') (indexed). Groups, \
         collectives and 'schools' appear too, e.g. 'Gilbert & George', 'British School 17th or 18th century'.",
    ),
    (
        "artists",
        Some("sort_name"),
        "Name as sorted in an index, surname first, e.g. 'Turner, Joseph Mallord William'; null for stubs.",
    ),
    (
        "artists",
        Some("gender"),
        "'Male', 'Female' or null when unknown or not applicable (groups). Exact capitalised values.",
    ),
    (
        "artists",
        Some("birth_year"),
        "Year of birth (integer, e.g. 1775); null when unknown. For groups and 'schools' (gender null) \
         it is the start of their activity, e.g. 'British School 17th or 18th century' 1600-1799.",
    ),
    (
        "artists",
        Some("death_year"),
        "Year of death (integer, e.g. 1851); null when living or unknown.",
    ),
    (
        "artists",
        Some("birth_place"),
        "Place of birth as 'City, Country', e.g. 'London, United Kingdom', 'Paris, France'; \
         sometimes only a country. Country names are often in the country's own language: \
         'Deutschland', 'Italia', 'España', 'Polska', 'Nihon' (Japan), 'Rossiya' (Russia), 'Éire' (Ireland).",
    ),
    (
        "artists",
        Some("birth_country"),
        "Country part of birth_place (text after the last comma), e.g. 'United Kingdom', 'France', \
         'Deutschland' (Germany), 'Italia' (Italy), 'Nederland'; null when birth_place is null.",
    ),
    (
        "artists",
        Some("death_place"),
        "Place of death as 'City, Country', same conventions as birth_place; null when living or unknown.",
    ),
    (
        "artists",
        Some("death_country"),
        "Country part of death_place, e.g. 'United Kingdom', 'France'; null when unknown.",
    ),
    (
        "artists",
        Some("dates"),
        "Life dates as displayed by Tate, e.g. '1775–1851', 'born 1930'. Use birth_year/death_year for filtering.",
    ),
    (
        "artists",
        Some("total_works"),
        "Number of works Tate credits to the artist, as published in the artist file (not computed \
         here); count rows of artwork_contributors for the works present in this database.",
    ),
    (
        "artists",
        Some("url"),
        "Page of the artist on tate.org.uk, e.g. 'http://www.tate.org.uk/art/artists/bridget-riley-1845'.",
    ),
    (
        "artists",
        Some("is_stub"),
        "true when the row was created from an artwork's contributor list because the artist is \
         missing from Tate's artist file (5 artists, e.g. 'Ilya Kabakov'); false for regular rows.",
    ),
    // artworks
    (
        "artworks",
        None,
        "Works in the Tate collection, one row per work (about 69,000; over half are by J.M.W. Turner, \
         mostly sketchbook pages from the Turner Bequest). Artists: join artwork_contributors \
         (artwork_contributors.artwork_id = artworks.id) then artists. Subjects: artwork_subjects. \
         Art movements: artwork_movements. The database shows each caller only the works of its \
         tenant's acquisition era (row-level security); never filter by tenant yourself.",
    ),
    (
        "artworks",
        Some("id"),
        "Tate artwork id, primary key, e.g. 1035.",
    ),
    (
        "artworks",
        Some("accession_number"),
        "Tate accession number, unique, e.g. 'N01981', 'A00001', 'T07523', 'D12345', 'P01234', 'AR00123'. The letter prefix groups the collection: D is almost entirely the Turner Bequest works on paper, AR is ARTIST ROOMS.",
    ),
    (
        "artworks",
        Some("title"),
        "Title of the work, e.g. 'Norham Castle, Sunrise', 'Untitled'. Free text; search with ILIKE.",
    ),
    (
        "artworks",
        Some("all_artists"),
        "All credited artists as one display string, with attribution qualifiers, e.g. \
         'Joseph Mallord William Turner', 'attributed to Sawrey Gilpin'. Prefer joining artwork_contributors for filtering.",
    ),
    (
        "artworks",
        Some("medium"),
        "Materials and technique, free text, e.g. 'Oil paint on canvas', 'Graphite on paper', 'Watercolour on paper', 'Screenprint on paper'; null when not recorded. Search with ILIKE '%watercolour%' (British spelling).",
    ),
    (
        "artworks",
        Some("credit_line"),
        "How Tate acquired the work (provenance), e.g. 'Presented by Mrs John Richmond 1922', \
         'Purchased 1986', 'Bequeathed by Miss Alice Corkran 1910', 'Accepted by the nation as part of \
         the Turner Bequest 1856', 'ARTIST ROOMS Acquired jointly with the National Galleries of Scotland ...'. \
         Classify with ILIKE on the start: 'Presented%' (gift), 'Purchased%', 'Bequeathed%', 'Accepted%', 'Transferred%'.",
    ),
    (
        "artworks",
        Some("inscription"),
        "Inscription on the work as catalogued, e.g. 'date inscribed'; null for most works.",
    ),
    (
        "artworks",
        Some("date_text"),
        "Date of making as displayed, e.g. 'c.1845', '1828–9', 'date not known'. Use year_made for filtering.",
    ),
    (
        "artworks",
        Some("year_made"),
        "Year the work was made, or the first year of a range (integer, e.g. 1845); null when the date \
         is not known. Decade: (year_made / 10) * 10.",
    ),
    (
        "artworks",
        Some("year_made_end"),
        "Last year of the making date range (integer, >= year_made; equals year_made for a single year); null when not known.",
    ),
    (
        "artworks",
        Some("acquisition_year"),
        "Year Tate acquired the work (integer, 1823–2013); null for a few works. Decade: (acquisition_year / 10) * 10.",
    ),
    (
        "artworks",
        Some("classification"),
        "Kind of object, one of: 'on paper, unique' (drawings, watercolours), 'on paper, print', \
         'painting', 'sculpture', 'installation', 'relief', 'block for printing', 'time-based media', \
         'supporting material'; null for a few works.",
    ),
    (
        "artworks",
        Some("dimensions"),
        "Dimensions as catalogued, height x width (x depth), e.g. 'support: 908 x 1219 mm' or several lines for frame/support; free text.",
    ),
    (
        "artworks",
        Some("height_mm"),
        "Height in millimetres (numeric), of the main measured part (usually the support), e.g. 908; \
         null when not measured (e.g. 'dimensions variable'). Area in m²: height_mm * width_mm / 1e6.",
    ),
    (
        "artworks",
        Some("width_mm"),
        "Width in millimetres (numeric), e.g. 1219; null when not measured.",
    ),
    (
        "artworks",
        Some("depth_mm"),
        "Depth in millimetres (numeric), mostly for sculpture, reliefs and framed works; null for most flat works.",
    ),
    (
        "artworks",
        Some("foreign_title"),
        "Original-language title when different from title, e.g. 'Abstraktes Bild (809-3)'; null for most works.",
    ),
    (
        "artworks",
        Some("group_title"),
        "Series, sketchbook or portfolio the work belongs to, e.g. 'Holland Sketchbook', 'A Voyage Round Great Britain'; null when none.",
    ),
    ("artworks", Some("url"), "Page of the work on tate.org.uk."),
    // artwork_contributors
    (
        "artwork_contributors",
        None,
        "Links works to their artists (many-to-many): artwork_contributors.artwork_id = artworks.id, \
         artwork_contributors.artist_id = artists.id. Most works have one row with role 'artist'. \
         Contributors missing from Tate's artist file were added to artists as stubs (is_stub = true), \
         so every row joins. Count works per artist with COUNT(DISTINCT artwork_id).",
    ),
    (
        "artwork_contributors",
        Some("artwork_id"),
        "The work, references artworks.id.",
    ),
    (
        "artwork_contributors",
        Some("artist_id"),
        "The artist, references artists.id.",
    ),
    (
        "artwork_contributors",
        Some("role"),
        "How the artist is credited: 'artist' (the maker, 97% of rows), 'after' (a print or copy after \
         the artist's design), 'attributed to', 'manner of', 'pupil of', 'formerly attributed to', \
         'studio of', 'circle of', ... Filter role = 'artist' for works made by the artist.",
    ),
    (
        "artwork_contributors",
        Some("position"),
        "Order of the artist in the work's credit, 0 for the first (main) contributor.",
    ),
    // subjects
    (
        "subjects",
        None,
        "Tate's subject index as a three-level tree, e.g. 'people' > 'adults' > 'man'. Every level is a \
         row; parent_id points to the level above (null at the top). Works are tagged with leaf \
         subjects (level 3) through artwork_subjects. To find works under a broader subject, match \
         path with LIKE, e.g. path LIKE 'nature > weather%' or path LIKE 'places > %'.",
    ),
    (
        "subjects",
        Some("id"),
        "Subject id, primary key (assigned by the loader, stable for the same input file).",
    ),
    (
        "subjects",
        Some("name"),
        "Name of this level only, lower case, e.g. 'man', 'storm', 'sea', 'landscape', 'religion and belief'. The same name can occur under different parents.",
    ),
    (
        "subjects",
        Some("parent_id"),
        "The broader subject (subjects.id); null for the 16 top-level subjects such as 'people', 'nature', 'places', 'architecture'.",
    ),
    (
        "subjects",
        Some("level"),
        "Depth in the tree: 1 = top level (e.g. 'nature'), 2 = category (e.g. 'weather'), 3 = specific subject (e.g. 'storm').",
    ),
    (
        "subjects",
        Some("path"),
        "Full path from the top, unique, e.g. 'people > adults > man', 'nature > weather > storm', 'places > UK London > Trafalgar Square'.",
    ),
    // artwork_subjects
    (
        "artwork_subjects",
        None,
        "What a work depicts: links artworks to level-3 subjects (many-to-many). Join \
         artwork_subjects.artwork_id = artworks.id and artwork_subjects.subject_id = subjects.id. \
         About 10,000 works have no subjects.",
    ),
    (
        "artwork_subjects",
        Some("artwork_id"),
        "The work, references artworks.id.",
    ),
    (
        "artwork_subjects",
        Some("subject_id"),
        "The subject (a level-3 subjects row), references subjects.id.",
    ),
    // movements
    (
        "movements",
        None,
        "Art movements and groups (141), e.g. 'Pre-Raphaelite Brotherhood', 'Surrealism', 'Pop Art', \
         'St Ives School', 'Young British Artists (YBA)'. Linked to artists by artist_movements and to \
         works by artwork_movements. The source data has no era for movements.",
    ),
    (
        "movements",
        Some("id"),
        "Movement id, primary key (assigned by the loader).",
    ),
    (
        "movements",
        Some("name"),
        "Movement name, unique, e.g. 'Surrealism', 'Conceptual Art', 'British Pop', 'Romanticism'.",
    ),
    // artist_movements
    (
        "artist_movements",
        None,
        "Movements an artist is associated with (many-to-many): artist_movements.artist_id = artists.id, \
         artist_movements.movement_id = movements.id. About 900 artists have at least one.",
    ),
    (
        "artist_movements",
        Some("artist_id"),
        "The artist, references artists.id.",
    ),
    (
        "artist_movements",
        Some("movement_id"),
        "The movement, references movements.id.",
    ),
    // artwork_movements
    (
        "artwork_movements",
        None,
        "Movements a work is catalogued under (many-to-many): artwork_movements.artwork_id = artworks.id, \
         artwork_movements.movement_id = movements.id. About 6,200 works have one.",
    ),
    (
        "artwork_movements",
        Some("artwork_id"),
        "The work, references artworks.id.",
    ),
    (
        "artwork_movements",
        Some("movement_id"),
        "The movement, references movements.id.",
    ),
    // tenant_eras
    (
        "tenant_eras",
        None,
        "Access configuration, not collection data: the acquisition years each tenant may see \
         (row-level security on artworks). Only the caller's own row is visible. There is no need \
         to filter artworks by it: the database already does.",
    ),
    (
        "tenant_eras",
        Some("tenant"),
        "Tenant name as in the caller's token, primary key, e.g. 'modern'.",
    ),
    (
        "tenant_eras",
        Some("from_year"),
        "First acquisition_year the tenant sees (inclusive); null for no lower bound.",
    ),
    (
        "tenant_eras",
        Some("to_year"),
        "Last acquisition_year the tenant sees (inclusive); null for no upper bound.",
    ),
];

/// `COMMENT ON` statements for every table and column, in one batch.
pub(crate) fn comment_statements(schema: &str) -> String {
    let mut sql = String::new();
    for (table, column, text) in COMMENTS {
        let text = text.replace('\'', "''");
        match column {
            None => sql.push_str(&format!("COMMENT ON TABLE {schema}.{table} IS '{text}';\n")),
            Some(column) => sql.push_str(&format!(
                "COMMENT ON COLUMN {schema}.{table}.{column} IS '{text}';\n"
            )),
        }
    }
    sql
}

/// Replaces the `{s}` placeholder with the quoted schema.
pub(crate) fn render(template: &str, schema: &str) -> String {
    template.replace("{s}", schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column created has a comment, and every comment names a real column.
    #[test]
    fn every_table_and_column_is_commented() {
        let mut created = Vec::new();
        let mut table = "";
        let ddl = format!("{CREATE}{TENANT_ERAS}");
        for line in ddl.lines().map(str::trim) {
            let rest = line
                .strip_prefix("CREATE TABLE {s}.")
                .or_else(|| line.strip_prefix("CREATE TABLE IF NOT EXISTS {s}."));
            if let Some(rest) = rest {
                table = rest.split_whitespace().next().unwrap_or_default();
                created.push((table.to_owned(), None));
            } else if !line.is_empty() && !line.starts_with(')') && !line.starts_with("CHECK") {
                let column = line.split_whitespace().next().unwrap_or_default();
                created.push((table.to_owned(), Some(column.to_owned())));
            }
        }
        let commented: Vec<(String, Option<String>)> = COMMENTS
            .iter()
            .map(|(t, c, _)| ((*t).to_owned(), c.map(str::to_owned)))
            .collect();
        for item in &created {
            assert!(commented.contains(item), "no comment for {item:?}");
        }
        for item in &commented {
            assert!(created.contains(item), "comment for unknown {item:?}");
        }
        assert_eq!(
            created.iter().filter(|(_, c)| c.is_none()).count(),
            TABLES.len() + 1
        );
    }
}
