//! Reading the Tate JSON-lines files: serde shapes of one line, normalisation
//! into table rows, and the interners that give subjects and movements ids.
//!
//! Everything here is synchronous and CPU-bound; the loader runs it on a
//! blocking thread.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;

use super::IngestError;

/// One line of `artists.jsonl.gz`.
#[derive(Debug, Deserialize)]
pub(crate) struct ArtistLine {
    pub id: i32,
    pub name: String,
    #[serde(default)]
    pub sort_name: Option<String>,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub birth_year: Option<i32>,
    #[serde(default)]
    pub death_year: Option<i32>,
    #[serde(default)]
    pub birth_place: Option<String>,
    #[serde(default)]
    pub death_place: Option<String>,
    #[serde(default)]
    pub dates: Option<String>,
    #[serde(default)]
    pub movements: Vec<String>,
    #[serde(default)]
    pub total_works: Option<i32>,
    #[serde(default)]
    pub url: Option<String>,
}

/// One line of `artworks.jsonl.gz`.
#[derive(Debug, Deserialize)]
pub(crate) struct ArtworkLine {
    pub id: i32,
    pub acno: String,
    pub title: String,
    #[serde(default)]
    pub all_artists: Option<String>,
    #[serde(default)]
    pub contributors: Vec<ContributorLine>,
    #[serde(default)]
    pub date_text: Option<String>,
    #[serde(default)]
    pub date_range: Option<DateRange>,
    #[serde(default)]
    pub acquisition_year: Option<i32>,
    #[serde(default)]
    pub classification: Option<String>,
    #[serde(default)]
    pub medium: Option<String>,
    #[serde(default)]
    pub credit_line: Option<String>,
    #[serde(default)]
    pub dimensions: Option<String>,
    #[serde(default)]
    pub height: Option<f64>,
    #[serde(default)]
    pub width: Option<f64>,
    #[serde(default)]
    pub depth: Option<f64>,
    #[serde(default)]
    pub units: Option<String>,
    #[serde(default)]
    pub inscription: Option<String>,
    #[serde(default)]
    pub foreign_title: Option<String>,
    #[serde(default)]
    pub group_title: Option<String>,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub movements: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// An entry of an artwork's `contributors` array.
#[derive(Debug, Deserialize)]
pub(crate) struct ContributorLine {
    pub id: i32,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub birth_year: Option<i32>,
}

/// `date_range`: `{"startYear": 1785, "endYear": 1785, "text": "?c.1785"}`.
/// In 32 lines `startYear` is a string ("2006", "c.1997-9", "no date") and
/// `endYear` is missing.
#[derive(Debug, Deserialize)]
pub(crate) struct DateRange {
    #[serde(rename = "startYear", default)]
    pub start_year: Option<YearValue>,
    #[serde(rename = "endYear", default)]
    pub end_year: Option<YearValue>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum YearValue {
    Number(i64),
    Text(String),
}

impl YearValue {
    /// The year as a number: the value itself, or the first run of four
    /// digits in a text ("c.1997-9" → 1997); `None` for "no date".
    fn year(&self) -> Option<i32> {
        match self {
            YearValue::Number(n) => i32::try_from(*n).ok(),
            YearValue::Text(text) => first_four_digit_year(text),
        }
    }
}

fn first_four_digit_year(text: &str) -> Option<i32> {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if run == 4 {
                return text[i - 4..i].parse().ok();
            }
            run = 0;
        }
    }
    if run == 4 {
        return text[bytes.len() - 4..].parse().ok();
    }
    None
}

/// Trims surrounding whitespace; empty strings become `None`.
pub(crate) fn clean(value: Option<String>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == value.len() {
        Some(value)
    } else {
        Some(trimmed.to_owned())
    }
}

/// A row of `artists`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArtistRow {
    pub id: i32,
    pub name: String,
    pub sort_name: Option<String>,
    pub gender: Option<String>,
    pub birth_year: Option<i32>,
    pub death_year: Option<i32>,
    pub birth_place: Option<String>,
    pub death_place: Option<String>,
    pub dates: Option<String>,
    pub total_works: Option<i32>,
    pub url: Option<String>,
    /// True when the artist only appears as an artwork contributor.
    pub is_stub: bool,
}

impl ArtistRow {
    /// Country part of a place ("Philadelphia, United States" → "United
    /// States"; "Polska" → "Polska").
    pub(crate) fn country(place: Option<&str>) -> Option<String> {
        let place = place?;
        let country = place.rsplit(',').next().unwrap_or(place).trim();
        (!country.is_empty()).then(|| country.to_owned())
    }

    /// Fills fields this row lacks from another line with the same id.
    fn merge(&mut self, other: ArtistRow) {
        fn fill<T>(slot: &mut Option<T>, other: Option<T>) {
            if slot.is_none() {
                *slot = other;
            }
        }
        fill(&mut self.sort_name, other.sort_name);
        fill(&mut self.gender, other.gender);
        fill(&mut self.birth_year, other.birth_year);
        fill(&mut self.death_year, other.death_year);
        fill(&mut self.birth_place, other.birth_place);
        fill(&mut self.death_place, other.death_place);
        fill(&mut self.dates, other.dates);
        fill(&mut self.total_works, other.total_works);
        fill(&mut self.url, other.url);
    }
}

/// A row of `artworks`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArtworkRow {
    pub id: i32,
    pub accession_number: String,
    pub title: String,
    pub all_artists: Option<String>,
    pub medium: Option<String>,
    pub credit_line: Option<String>,
    pub inscription: Option<String>,
    pub date_text: Option<String>,
    pub year_made: Option<i32>,
    pub year_made_end: Option<i32>,
    pub acquisition_year: Option<i32>,
    pub classification: Option<String>,
    pub dimensions: Option<String>,
    pub height_mm: Option<f64>,
    pub width_mm: Option<f64>,
    pub depth_mm: Option<f64>,
    pub foreign_title: Option<String>,
    pub group_title: Option<String>,
    pub url: Option<String>,
}

/// A row of `subjects`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubjectRow {
    pub id: i32,
    pub name: String,
    pub parent_id: Option<i32>,
    pub level: i32,
    pub path: String,
}

/// A row of `artwork_contributors`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContributorRow {
    pub artwork_id: i32,
    pub artist_id: i32,
    pub role: String,
    pub position: i32,
}

/// Assigns ids to movement names in first-seen order.
#[derive(Debug, Default)]
pub(crate) struct Movements {
    ids: HashMap<String, i32>,
    pub rows: Vec<(i32, String)>,
}

impl Movements {
    pub(crate) fn id(&mut self, name: &str) -> Option<i32> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = i32::try_from(self.rows.len() + 1).ok()?;
        self.ids.insert(name.to_owned(), id);
        self.rows.push((id, name.to_owned()));
        Some(id)
    }
}

/// Assigns ids to every node of the subject hierarchy in first-seen order.
#[derive(Debug, Default)]
pub(crate) struct Subjects {
    ids: HashMap<String, i32>,
    pub rows: Vec<SubjectRow>,
}

impl Subjects {
    /// The id of the node `path` ("people > adults > man"), creating it and
    /// its ancestors when new.
    pub(crate) fn id(&mut self, path: &str) -> Result<i32, String> {
        if let Some(id) = self.ids.get(path) {
            return Ok(*id);
        }
        let mut parent: Option<i32> = None;
        let mut prefix = String::new();
        for (level, part) in path.split(" > ").enumerate() {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("subject {path:?} has an empty level"));
            }
            if !prefix.is_empty() {
                prefix.push_str(" > ");
            }
            prefix.push_str(part);
            let id = match self.ids.get(&prefix) {
                Some(id) => *id,
                None => {
                    let id = i32::try_from(self.rows.len() + 1)
                        .map_err(|_| "too many subjects".to_owned())?;
                    self.ids.insert(prefix.clone(), id);
                    self.rows.push(SubjectRow {
                        id,
                        name: part.to_owned(),
                        parent_id: parent,
                        level: i32::try_from(level + 1).unwrap_or(i32::MAX),
                        path: prefix.clone(),
                    });
                    id
                }
            };
            parent = Some(id);
        }
        let id = parent.ok_or_else(|| "empty subject".to_owned())?;
        self.ids.insert(path.to_owned(), id);
        Ok(id)
    }
}

/// Millimetres per unit; `None` for a unit this loader does not know.
fn mm_per_unit(unit: &str) -> Option<f64> {
    match unit.trim().to_ascii_lowercase().as_str() {
        "mm" => Some(1.0),
        "cm" => Some(10.0),
        "m" => Some(1000.0),
        "in" | "inch" | "inches" => Some(25.4),
        _ => None,
    }
}

/// Normalises an artwork line into its row; the links are handled by the caller.
///
/// The source's `height` and `width` are swapped relative to the `dimensions`
/// text, which Tate writes height × width × depth (e.g. "Norham Castle,
/// Sunrise", a landscape, is "support: 908 x 1219 mm" with `height` 1219 and
/// `width` 908): `height_mm` takes the source `width` and `width_mm` the
/// source `height`.
pub(crate) fn artwork_row(line: &ArtworkLine) -> Result<ArtworkRow, String> {
    let has_size = line.height.is_some() || line.width.is_some() || line.depth.is_some();
    let factor = match line.units.as_deref().map(str::trim) {
        None | Some("") if has_size => return Err("dimensions given without units".to_owned()),
        None | Some("") => 1.0,
        Some(unit) => mm_per_unit(unit).ok_or_else(|| format!("unknown unit {unit:?}"))?,
    };
    let mm = |v: Option<f64>| -> Result<Option<f64>, String> {
        match v {
            Some(v) if !v.is_finite() || v < 0.0 => Err(format!("invalid dimension {v}")),
            Some(v) => Ok(Some((v * factor * 10.0).round() / 10.0)),
            None => Ok(None),
        }
    };
    let (year_made, year_made_end) = match &line.date_range {
        Some(range) => {
            let start = range.start_year.as_ref().and_then(YearValue::year);
            let end = range.end_year.as_ref().and_then(YearValue::year);
            let end = match (start, end) {
                (Some(s), Some(e)) if e >= s => Some(e),
                (Some(s), _) => Some(s),
                (None, e) => e,
            };
            (start, end)
        }
        None => (None, None),
    };
    Ok(ArtworkRow {
        id: line.id,
        accession_number: line.acno.trim().to_owned(),
        title: line.title.trim().to_owned(),
        all_artists: clean(line.all_artists.clone()),
        medium: clean(line.medium.clone()),
        credit_line: clean(line.credit_line.clone()),
        inscription: clean(line.inscription.clone()),
        date_text: clean(line.date_text.clone()),
        year_made,
        year_made_end,
        acquisition_year: line.acquisition_year,
        classification: clean(line.classification.clone()),
        dimensions: clean(line.dimensions.clone()),
        height_mm: mm(line.width)?,
        width_mm: mm(line.height)?,
        depth_mm: mm(line.depth)?,
        foreign_title: clean(line.foreign_title.clone()),
        group_title: clean(line.group_title.clone()),
        url: clean(line.url.clone()),
    })
}

pub(crate) fn artist_row(line: ArtistLine) -> ArtistRow {
    ArtistRow {
        id: line.id,
        name: line.name.trim().to_owned(),
        sort_name: clean(line.sort_name),
        gender: clean(line.gender),
        birth_year: line.birth_year,
        death_year: line.death_year,
        birth_place: clean(line.birth_place),
        death_place: clean(line.death_place),
        dates: clean(line.dates),
        total_works: line.total_works,
        url: clean(line.url),
        is_stub: false,
    }
}

/// A gzipped JSON-lines file read line by line.
pub(crate) struct Lines {
    path: PathBuf,
    reader: BufReader<MultiGzDecoder<Box<dyn Read + Send>>>,
    buf: String,
    line_no: u64,
}

impl Lines {
    /// Wraps an opened file (possibly behind a progress reader).
    pub(crate) fn new(path: &Path, file: Box<dyn Read + Send>) -> Self {
        Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, MultiGzDecoder::new(file)),
            buf: String::new(),
            line_no: 0,
        }
    }

    /// The next non-blank line and its 1-based number, `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &str)>, IngestError> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            let read =
                self.reader
                    .read_line(&mut self.buf)
                    .map_err(|source| IngestError::Read {
                        path: self.path.clone(),
                        line: self.line_no,
                        source,
                    })?;
            if read == 0 {
                return Ok(None);
            }
            if !self.buf.trim().is_empty() {
                return Ok(Some((self.line_no, self.buf.as_str())));
            }
        }
    }

    /// Parses the next non-blank line as `T`.
    pub(crate) fn next_record<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<Option<(u64, T)>, IngestError> {
        let path = self.path.clone();
        match self.next_line()? {
            None => Ok(None),
            Some((line, text)) => match serde_json::from_str::<T>(text) {
                Ok(value) => Ok(Some((line, value))),
                Err(err) => Err(IngestError::Malformed {
                    path,
                    line,
                    message: describe_json_error(&err),
                }),
            },
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// serde_json's message without its "at line 1 column N" suffix (each line is
/// parsed alone, so the line is always 1), with the column kept.
fn describe_json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("invalid json: {message} (column {})", err.column()),
        None => format!("invalid json: {text}"),
    }
}

/// All artists of `artists.jsonl.gz`, lines sharing an id merged (the first
/// line wins, later lines fill its missing fields), and the number of lines
/// merged that way.
pub(crate) fn read_artists(
    lines: &mut Lines,
    movements: &mut Movements,
) -> Result<ArtistsOutcome, IngestError> {
    let mut out = ArtistsOutcome::default();
    let mut index: HashMap<i32, usize> = HashMap::new();
    let mut links: HashSet<(i32, i32)> = HashSet::new();
    while let Some((line, artist)) = lines.next_record::<ArtistLine>()? {
        if artist.name.trim().is_empty() {
            return Err(IngestError::Malformed {
                path: lines.path().to_owned(),
                line,
                message: format!("artist {} has an empty name", artist.id),
            });
        }
        out.lines += 1;
        let id = artist.id;
        for name in &artist.movements {
            if let Some(movement) = movements.id(name)
                && links.insert((id, movement))
            {
                out.movement_links.push((id, movement));
            }
        }
        let row = artist_row(artist);
        match index.get(&id) {
            Some(&at) => {
                out.duplicate_lines += 1;
                if let Some(existing) = out.rows.get_mut(at) {
                    existing.merge(row);
                }
            }
            None => {
                index.insert(id, out.rows.len());
                out.rows.push(row);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub(crate) struct ArtistsOutcome {
    pub rows: Vec<ArtistRow>,
    pub movement_links: Vec<(i32, i32)>,
    pub lines: u64,
    pub duplicate_lines: u64,
}

/// Everything of `artworks.jsonl.gz` except the artwork rows themselves, which
/// are streamed to the database as they are parsed.
#[derive(Debug, Default)]
pub(crate) struct ArtworkLinks {
    pub contributors: Vec<ContributorRow>,
    pub subjects: Subjects,
    pub subject_links: Vec<(i32, i32)>,
    pub movement_links: Vec<(i32, i32)>,
    /// Artists named as contributors but absent from the artists file.
    pub stubs: Vec<ArtistRow>,
    pub lines: u64,
}

/// Reads the artworks, handing rows to `emit` in order, and collects links.
/// `known_artists` are the ids of the artists file.
pub(crate) fn read_artworks(
    lines: &mut Lines,
    known_artists: &HashSet<i32>,
    movements: &mut Movements,
    mut emit: impl FnMut(ArtworkRow) -> Result<(), IngestError>,
) -> Result<ArtworkLinks, IngestError> {
    let mut out = ArtworkLinks::default();
    let mut seen_ids: HashMap<i32, u64> = HashMap::new();
    let mut seen_acno: HashMap<String, u64> = HashMap::new();
    let mut stub_ids: HashSet<i32> = HashSet::new();
    while let Some((line, artwork)) = lines.next_record::<ArtworkLine>()? {
        let malformed = |message: String| IngestError::Malformed {
            path: lines.path().to_owned(),
            line,
            message,
        };
        if let Some(first) = seen_ids.insert(artwork.id, line) {
            return Err(malformed(format!(
                "duplicate artwork id {} (first on line {first})",
                artwork.id
            )));
        }
        let row = artwork_row(&artwork).map_err(malformed)?;
        if row.accession_number.is_empty() {
            return Err(malformed("empty accession number (acno)".to_owned()));
        }
        if let Some(first) = seen_acno.insert(row.accession_number.clone(), line) {
            return Err(malformed(format!(
                "duplicate accession number {} (first on line {first})",
                row.accession_number
            )));
        }
        out.lines += 1;

        let mut position = 0;
        for c in &artwork.contributors {
            let role = c.role.trim();
            if role.is_empty() {
                return Err(malformed(format!("contributor {} has an empty role", c.id)));
            }
            let duplicate = out
                .contributors
                .iter()
                .rev()
                .take_while(|r| r.artwork_id == artwork.id)
                .any(|r| r.artist_id == c.id && r.role == role);
            if duplicate {
                continue;
            }
            out.contributors.push(ContributorRow {
                artwork_id: artwork.id,
                artist_id: c.id,
                role: role.to_owned(),
                position,
            });
            position += 1;
            if !known_artists.contains(&c.id) && stub_ids.insert(c.id) {
                out.stubs.push(ArtistRow {
                    id: c.id,
                    name: c.name.trim().to_owned(),
                    sort_name: None,
                    gender: clean(c.gender.clone()),
                    birth_year: c.birth_year,
                    death_year: None,
                    birth_place: None,
                    death_place: None,
                    dates: None,
                    total_works: None,
                    url: None,
                    is_stub: true,
                });
            }
        }
        let first_subject_link = out.subject_links.len();
        for path in &artwork.subjects {
            let subject = out.subjects.id(path).map_err(malformed)?;
            if !out.subject_links[first_subject_link..]
                .iter()
                .any(|&(_, s)| s == subject)
            {
                out.subject_links.push((artwork.id, subject));
            }
        }
        let first_movement_link = out.movement_links.len();
        for name in &artwork.movements {
            if let Some(movement) = movements.id(name)
                && !out.movement_links[first_movement_link..]
                    .iter()
                    .any(|&(_, m)| m == movement)
            {
                out.movement_links.push((artwork.id, movement));
            }
        }
        emit(row)?;
    }
    Ok(out)
}

/// Opens `path`, mapping "not found" to [`IngestError::MissingFile`].
pub(crate) fn open(path: &Path) -> Result<File, IngestError> {
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            IngestError::MissingFile {
                path: path.to_owned(),
            }
        } else {
            IngestError::Open {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artwork(json: &str) -> ArtworkLine {
        match serde_json::from_str(json) {
            Ok(line) => line,
            Err(err) => panic!("test json does not parse: {err}"),
        }
    }

    #[test]
    fn years_from_text() {
        assert_eq!(first_four_digit_year("c.1997-9"), Some(1997));
        assert_eq!(first_four_digit_year("2006"), Some(2006));
        assert_eq!(first_four_digit_year("no date"), None);
        assert_eq!(first_four_digit_year("12345"), None);
    }

    #[test]
    fn swaps_height_and_width_and_keeps_mm() {
        let line = artwork(
            r#"{"id": 1, "acno": "N01981", "title": "Norham Castle, Sunrise ",
                "dimensions": "support: 908 x 1219 mm", "height": 1219.0,
                "width": 908.0, "depth": null, "units": "mm",
                "date_range": {"startYear": 1845, "endYear": 1845, "text": "c.1845"}}"#,
        );
        let row = artwork_row(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.height_mm, Some(908.0));
        assert_eq!(row.width_mm, Some(1219.0));
        assert_eq!(row.depth_mm, None);
        assert_eq!(row.title, "Norham Castle, Sunrise");
        assert_eq!((row.year_made, row.year_made_end), (Some(1845), Some(1845)));
    }

    #[test]
    fn converts_cm_and_rejects_unknown_units() {
        let line = artwork(
            r#"{"id": 1, "acno": "X", "title": "t", "height": 10.0, "width": 2.5, "units": "cm"}"#,
        );
        let row = artwork_row(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((row.height_mm, row.width_mm), (Some(25.0), Some(100.0)));
        let line =
            artwork(r#"{"id": 1, "acno": "X", "title": "t", "height": 10.0, "units": "furlong"}"#);
        assert!(artwork_row(&line).is_err_and(|e| e.contains("furlong")));
        let line = artwork(r#"{"id": 1, "acno": "X", "title": "t", "height": 10.0, "units": ""}"#);
        assert!(artwork_row(&line).is_err());
    }

    #[test]
    fn odd_date_ranges() {
        let line = artwork(
            r#"{"id": 1, "acno": "X", "title": "t", "date_range": {"startYear": "c.1997-9", "text": "c.1997-9"}}"#,
        );
        let row = artwork_row(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((row.year_made, row.year_made_end), (Some(1997), Some(1997)));
        let line = artwork(
            r#"{"id": 1, "acno": "X", "title": "t", "date_range": {"startYear": 1828, "endYear": 1819, "text": "1828-9"}}"#,
        );
        let row = artwork_row(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((row.year_made, row.year_made_end), (Some(1828), Some(1828)));
        let line = artwork(
            r#"{"id": 1, "acno": "X", "title": "t", "date_range": {"startYear": "no date", "text": "no date"}}"#,
        );
        let row = artwork_row(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((row.year_made, row.year_made_end), (None, None));
    }

    #[test]
    fn subject_hierarchy_shares_ancestors() {
        let mut subjects = Subjects::default();
        let man = subjects
            .id("people > adults > man")
            .unwrap_or_else(|e| panic!("{e}"));
        let woman = subjects
            .id("people > adults > woman")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(man, woman);
        assert_eq!(subjects.rows.len(), 4);
        let people = &subjects.rows[0];
        assert_eq!(
            (people.name.as_str(), people.parent_id, people.level),
            ("people", None, 1)
        );
        assert_eq!(subjects.rows[2].parent_id, Some(subjects.rows[1].id));
        assert_eq!(subjects.rows[2].path, "people > adults > man");
        assert!(subjects.id("people >  > man").is_err());
    }

    #[test]
    fn json_errors_drop_the_useless_line_number() {
        let err = match serde_json::from_str::<ArtworkLine>(r#"{"id": "x"}"#) {
            Err(err) => err,
            Ok(_) => panic!("should not parse"),
        };
        let message = describe_json_error(&err);
        assert!(
            message.starts_with("invalid json: invalid type"),
            "{message}"
        );
        assert!(!message.contains("line 1"), "{message}");
    }

    #[test]
    fn countries() {
        assert_eq!(
            ArtistRow::country(Some("Philadelphia, United States")).as_deref(),
            Some("United States")
        );
        assert_eq!(
            ArtistRow::country(Some("Polska")).as_deref(),
            Some("Polska")
        );
        assert_eq!(ArtistRow::country(None), None);
    }
}
