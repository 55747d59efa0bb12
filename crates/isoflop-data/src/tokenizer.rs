//! Tokenizers: raw bytes, and GPT-2's byte-level BPE (its ranks are embedded in `tiktoken-rs`,
//! so nothing is fetched at run time).

use crate::error::DataError;

/// Turns text into token ids and back.
pub trait Tokenizer: Send + Sync {
    /// Stable name, as written to manifests (the [`TokenizerKind`] spelling).
    fn name(&self) -> &'static str;
    /// Number of ids; every id the tokenizer produces is below it.
    fn vocab_size(&self) -> u32;
    /// The end-of-text id appended after every document.
    fn eot(&self) -> u32;
    /// Encodes text. Special-token strings in the text (such as `<|endoftext|>`) are encoded as
    /// ordinary text, never as the special id.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Decodes ids to bytes (which need not be valid UTF-8 when a multi-byte character is cut).
    /// Special ids decode to their names (`<|endoftext|>`); ids outside the vocabulary decode to
    /// U+FFFD.
    fn decode(&self, tokens: &[u32]) -> Vec<u8>;
}

pub use isoflop_core::Tokenizer as TokenizerKind;

/// The tokenizers isoflop can prepare corpora with.
pub const PREPARABLE: [TokenizerKind; 2] = [TokenizerKind::Byte, TokenizerKind::Gpt2];

/// Builds a tokenizer: `byte` or `gpt2` (`llama3` is known for planning external corpora
/// only; isoflop does not ship its vocabulary).
pub fn tokenizer_for(kind: TokenizerKind) -> Result<Box<dyn Tokenizer>, DataError> {
    match kind {
        TokenizerKind::Byte => Ok(Box::new(ByteTokenizer)),
        TokenizerKind::Gpt2 => Ok(Box::new(Gpt2Tokenizer::new()?)),
        TokenizerKind::Llama3 => {
            Err(DataError::UnknownTokenizer { name: kind.to_string(), valid: PREPARABLE.map(|k| k.as_str()).join(", ") })
        }
    }
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// One id per byte (0..=255) plus three specials: 256 `<|endoftext|>`, 257 `<|pad|>`,
/// 258 `<|bos|>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// End of text.
    pub const EOT: u32 = 256;
    /// Padding.
    pub const PAD: u32 = 257;
    /// Beginning of sequence.
    pub const BOS: u32 = 258;
    /// Vocabulary size.
    pub const VOCAB: u32 = 259;
    const SPECIALS: [&'static str; 3] = ["<|endoftext|>", "<|pad|>", "<|bos|>"];
}

impl Tokenizer for ByteTokenizer {
    fn name(&self) -> &'static str {
        "byte"
    }
    fn vocab_size(&self) -> u32 {
        Self::VOCAB
    }
    fn eot(&self) -> u32 {
        Self::EOT
    }
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
    fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tokens.len());
        for &t in tokens {
            match t {
                0..=255 => out.push(t as u8),
                256..=258 => out.extend_from_slice(Self::SPECIALS[(t - 256) as usize].as_bytes()),
                _ => out.extend_from_slice(REPLACEMENT),
            }
        }
        out
    }
}

/// GPT-2's tokenizer (tiktoken's `gpt2`/`r50k_base`): 50257 ids, end of text 50256.
pub struct Gpt2Tokenizer {
    bpe: tiktoken_rs::CoreBPE,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gpt2Tokenizer")
    }
}

impl Gpt2Tokenizer {
    /// End of text.
    pub const EOT: u32 = 50256;
    /// Vocabulary size.
    pub const VOCAB: u32 = 50257;

    /// Builds the tokenizer from the ranks embedded in `tiktoken-rs` (no network).
    pub fn new() -> Result<Self, DataError> {
        let bpe = tiktoken_rs::r50k_base().map_err(|e| DataError::Tokenizer { name: "gpt2".into(), reason: e.to_string() })?;
        Ok(Self { bpe })
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn name(&self) -> &'static str {
        "gpt2"
    }
    fn vocab_size(&self) -> u32 {
        Self::VOCAB
    }
    fn eot(&self) -> u32 {
        Self::EOT
    }
    fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }
    fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tokens.len() * 4);
        // Decode runs of in-vocabulary ids at once; `tiktoken-rs` panics on unknown ids.
        let mut run = Vec::new();
        for &t in tokens {
            if t < Self::VOCAB {
                run.push(t);
                continue;
            }
            for piece in self.bpe._decode_native_and_split(std::mem::take(&mut run)) {
                out.extend_from_slice(&piece);
            }
            out.extend_from_slice(REPLACEMENT);
        }
        for piece in self.bpe._decode_native_and_split(run) {
            out.extend_from_slice(&piece);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: [&str; 5] = [
        "",
        "In the beginning God created the heaven and the earth.\n",
        "naïve café — “quoted” 日本語テキスト 🦀 Ω≈ç√\u{0}\t\r\n",
        "def f(x):\n    return x ** 2  # <|endoftext|> stays text\n",
        "   leading and trailing whitespace   \n\n\n",
    ];

    #[test]
    fn byte_round_trip_and_specials() {
        let t = ByteTokenizer;
        assert_eq!((t.name(), t.vocab_size(), t.eot()), ("byte", 259, 256));
        for s in SAMPLES {
            let ids = t.encode(s);
            assert_eq!(ids.len(), s.len());
            assert!(ids.iter().all(|&i| i < 256));
            assert_eq!(t.decode(&ids), s.as_bytes());
        }
        assert_eq!(t.decode(&[104, 105, 256, 257, 258, 999]), "hi<|endoftext|><|pad|><|bos|>\u{FFFD}".as_bytes());
        // A special's spelling in the text is ordinary bytes, not the special id.
        assert!(!t.encode("<|endoftext|>").contains(&256));
    }

    #[test]
    fn gpt2_round_trip_and_known_ids() {
        let t = Gpt2Tokenizer::new().unwrap();
        assert_eq!((t.name(), t.vocab_size(), t.eot()), ("gpt2", 50257, 50256));
        for s in SAMPLES {
            let ids = t.encode(s);
            assert!(ids.iter().all(|&i| i < 50256), "{ids:?}");
            assert_eq!(t.decode(&ids), s.as_bytes(), "{s:?}");
        }
        // Reference ids from GPT-2's tokenizer.
        assert_eq!(t.encode("Hello world"), vec![15496, 995]);
        assert_eq!(t.encode(" the"), vec![262]);
        assert!(!t.encode("<|endoftext|>").contains(&50256));
        assert_eq!(t.decode(&[15496, 50256, 60000, 995]), "Hello<|endoftext|>\u{FFFD} world".as_bytes());
        // Byte-level: a split multi-byte character decodes to its raw bytes.
        let ids = t.encode("🦀");
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| t.decode(&[i])).collect();
        assert_eq!(bytes, "🦀".as_bytes());
    }

    #[test]
    fn by_name() {
        assert_eq!(tokenizer_for(TokenizerKind::Byte).unwrap().vocab_size(), 259);
        assert_eq!(tokenizer_for(TokenizerKind::Gpt2).unwrap().eot(), 50256);
        for kind in PREPARABLE {
            let t = tokenizer_for(kind).unwrap();
            assert_eq!((t.name(), u64::from(t.vocab_size())), (kind.as_str(), kind.vocab_size()));
        }
        let err = tokenizer_for(TokenizerKind::Llama3).err().unwrap().to_string();
        assert!(err.contains("llama3") && err.contains("byte, gpt2"), "{err}");
    }
}
