//! Regional varieties of English as held-out text: American English from the Brown corpus
//! (500 documents of 15 genres, 1961) and Australian English from the ABC corpus (ABC radio's
//! rural and science news, 2006), read from NLTK's data (a directory holding `brown.zip` and
//! `abc.zip`, or their unpacked `brown/` and `abc/` folders), tokenized into shards that text
//! tasks score.
//!
//! Brown is POS-tagged (`word/TAG` separated by spaces); its tags are dropped and the words
//! joined back into running text (no space before closing punctuation, `` and '' as double
//! quotes). ABC is plain text; each block between blank lines is a document.

use crate::corpus::{Document, decode_text};
use crate::shard::ShardWriter;
use crate::tasks::TaskError;
use crate::tokenizer::Tokenizer;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A variety and the NLTK corpus it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variety {
    /// American English: the Brown corpus.
    American,
    /// Australian English: the ABC corpus.
    Australian,
}

impl Variety {
    pub const ALL: [Variety; 2] = [Variety::American, Variety::Australian];

    /// The distribution's name in results.
    pub fn name(self) -> &'static str {
        match self {
            Variety::American => "american",
            Variety::Australian => "australian",
        }
    }

    /// The NLTK corpus.
    pub fn corpus(self) -> &'static str {
        match self {
            Variety::American => "brown",
            Variety::Australian => "abc",
        }
    }

    pub fn parse(s: &str) -> Option<Variety> {
        Variety::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// The files of an NLTK corpus: from `DIR/NAME.zip`, else `DIR/NAME/`; `(name, bytes)` in name
/// order, the README and the category list left out.
fn corpus_files(dir: &Path, corpus: &str) -> Result<Vec<(String, Vec<u8>)>, TaskError> {
    let zip_path = dir.join(format!("{corpus}.zip"));
    let skip = |name: &str| {
        let base = name.rsplit('/').next().unwrap_or(name);
        base.is_empty() || base == "README" || base == "cats.txt" || base == "CONTENTS"
    };
    let err = |p: &Path, m: String| TaskError { file: p.to_path_buf(), location: None, message: m };
    let mut out = Vec::new();
    if zip_path.is_file() {
        let f = std::fs::File::open(&zip_path).map_err(|e| err(&zip_path, e.to_string()))?;
        let mut z = zip::ZipArchive::new(f).map_err(|e| err(&zip_path, e.to_string()))?;
        for i in 0..z.len() {
            let mut entry = z.by_index(i).map_err(|e| err(&zip_path, e.to_string()))?;
            let name = entry.name().to_string();
            if entry.is_dir() || skip(&name) {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| err(&zip_path, format!("{name}: {e}")))?;
            out.push((name, bytes));
        }
    } else {
        let folder = dir.join(corpus);
        let rd = std::fs::read_dir(&folder).map_err(|_| {
            err(
                dir,
                format!(
                    "no {corpus}.zip or {corpus}/ here: expected NLTK's data for the {corpus} corpus (nltk_data/corpora, \
                     or the zips of nltk_data)"
                ),
            )
        })?;
        for e in rd {
            let e = e.map_err(|e| err(&folder, e.to_string()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() || skip(&name) {
                continue;
            }
            out.push((format!("{corpus}/{name}"), std::fs::read(e.path()).map_err(|x| err(&e.path(), x.to_string()))?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        return Err(err(dir, format!("the {corpus} corpus has no files")));
    }
    Ok(out)
}

/// Running text from Brown's tagged tokens.
pub fn untag_brown(tagged: &str) -> String {
    let mut out = String::with_capacity(tagged.len() / 2);
    for para in tagged.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut glue = true; // no space before the first word, nor after an opening mark
        for tok in para.split_whitespace() {
            let word = tok.rsplit_once('/').map(|(w, _)| w).unwrap_or(tok);
            let (word, opening, closing) = match word {
                "``" => ("\"", true, false),
                "''" => ("\"", false, true),
                "(" | "[" => (word, true, false),
                "." | "," | ";" | ":" | "?" | "!" | ")" | "]" | "'" | "n't" | "'s" | "'re" | "'ll" | "'d" | "'m" | "'ve" => {
                    (word, false, true)
                }
                _ => (word, false, false),
            };
            if !glue && !closing {
                out.push(' ');
            }
            out.push_str(word);
            glue = opening;
        }
    }
    out
}

/// The documents of a variety from NLTK's data in `dir`.
pub fn documents(dir: &Path, v: Variety) -> Result<Vec<Document>, TaskError> {
    let files = corpus_files(dir, v.corpus())?;
    let mut docs = Vec::new();
    match v {
        Variety::American => {
            for (name, bytes) in files {
                let text = untag_brown(&decode_text(&bytes));
                if !text.is_empty() {
                    docs.push(Document { name, text });
                }
            }
        }
        Variety::Australian => {
            for (name, bytes) in files {
                let text = decode_text(&bytes);
                for (i, block) in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()).enumerate() {
                    docs.push(Document { name: format!("{name}#{}", i + 1), text: block.to_string() });
                }
            }
        }
    }
    Ok(docs)
}

/// Tokenizes documents into `dir/NAME-DIGEST.bin` (content-addressed by the token payload's
/// digest; an existing shard of that name is kept) and returns its path and digest.
pub fn write_shard(dir: &Path, name: &str, docs: &[Document], tok: &dyn Tokenizer) -> Result<(PathBuf, String), TaskError> {
    let err = |m: String| TaskError { file: dir.to_path_buf(), location: None, message: m };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create the directory: {e}")))?;
    let tmp = dir.join(format!(".{name}-{}.bin", std::process::id()));
    let mut w = ShardWriter::create(&tmp, tok.vocab_size()).map_err(|e| err(e.to_string()))?;
    for d in docs {
        let mut t = tok.encode(&d.text);
        t.push(tok.eot());
        w.push_document(&t, d.bytes()).map_err(|e| err(e.to_string()))?;
    }
    let header = w.finish().map_err(|e| err(e.to_string()))?;
    let path = dir.join(format!("{name}-{}.bin", &header.digest[..16]));
    if path.is_file() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok((path, header.digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brown_tags_are_dropped_and_punctuation_joined() {
        let tagged =
            "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( it/pps did/dod n't/* )/) ./.\n\n\tNext/ap ./.\n";
        assert_eq!(untag_brown(tagged), "The jury said \"no evidence\", (it didn't).\nNext.");
    }

    #[test]
    fn both_varieties_come_from_a_folder_of_unpacked_corpora_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("brown")).unwrap();
        std::fs::write(dir.path().join("brown/ca01"), "\n\n\tHello/uh ./.\n").unwrap();
        std::fs::write(dir.path().join("brown/README"), "skipped").unwrap();
        std::fs::create_dir_all(dir.path().join("abc")).unwrap();
        std::fs::write(dir.path().join("abc/rural.txt"), b"One\nstory\n\nTwo \xb0C\n").unwrap();
        let us = documents(dir.path(), Variety::American).unwrap();
        assert_eq!((us.len(), us[0].text.as_str()), (1, "Hello."));
        let au = documents(dir.path(), Variety::Australian).unwrap();
        assert_eq!(au.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(), ["One\nstory", "Two \u{b0}C"]);
        let e = documents(&dir.path().join("none"), Variety::American).unwrap_err().to_string();
        assert!(e.contains("no brown.zip or brown/ here"), "{e}");
        let (p, d) = write_shard(dir.path(), "american", &us, &crate::ByteTokenizer).unwrap();
        let s = crate::Shard::open(&p).unwrap();
        assert_eq!((s.len(), s.header().digest.as_str()), (7, d.as_str()));
        assert_eq!(write_shard(dir.path(), "american", &us, &crate::ByteTokenizer).unwrap().0, p);
    }
}
