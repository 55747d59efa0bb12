//! A small man(7) roff to plain text converter: enough of the man macros, requests and escapes
//! that the Linux man-pages use to get readable running text, without a roff formatter.
//!
//! Filled text becomes one line per paragraph (no re-wrapping); no-fill blocks (`.nf`, `.EX`)
//! and tables keep their lines. Indentation follows `.RS`/`.RE` and tagged paragraphs.

/// Converts one man page's roff source to text. Returns `None` for `.so` redirections.
pub fn man_to_text(src: &str) -> Option<String> {
    let mut r = Renderer::default();
    let mut pending = String::new();
    for raw in src.lines() {
        // An unescaped backslash at the end of a line joins it with the next.
        if let Some(body) = strip_continuation(raw) {
            pending.push_str(body);
            continue;
        }
        if pending.is_empty() {
            if !r.line(raw) {
                return None;
            }
        } else {
            pending.push_str(raw);
            let joined = std::mem::take(&mut pending);
            if !r.line(&joined) {
                return None;
            }
        }
    }
    if !pending.is_empty() && !r.line(&pending) {
        return None;
    }
    Some(r.finish())
}

/// `Some(line without the final backslash)` when the line ends in an escaped newline.
fn strip_continuation(line: &str) -> Option<&str> {
    let trailing = line.bytes().rev().take_while(|&b| b == b'\\').count();
    (trailing % 2 == 1).then(|| &line[..line.len() - 1])
}

#[derive(Default)]
struct Renderer {
    out: String,
    /// The filled paragraph being built.
    para: String,
    /// Prefix (indentation, `.IP` tag) for `para`.
    para_prefix: String,
    nofill: bool,
    rs_depth: usize,
    /// Extra indentation of a tagged paragraph's body.
    body_indent: usize,
    tag_pending: bool,
    heading_pending: bool,
    in_macro_def: bool,
    table: Option<Table>,
    url: Option<String>,
}

struct Table {
    format_done: bool,
    tab: char,
}

impl Renderer {
    fn indent(&self) -> String {
        " ".repeat(4 * self.rs_depth + self.body_indent)
    }

    /// Ends the current output line (if any) without a blank line.
    fn flush(&mut self) {
        if !self.para.is_empty() {
            let text = std::mem::take(&mut self.para);
            let prefix = std::mem::take(&mut self.para_prefix);
            self.out.push_str(&prefix);
            self.out.push_str(text.trim_end());
            self.out.push('\n');
        }
        self.para_prefix.clear();
    }

    /// Ends the paragraph and leaves one blank line.
    fn paragraph(&mut self) {
        self.flush();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    /// Adds running text to the current paragraph (or writes a line in no-fill mode).
    fn text(&mut self, t: &str) {
        if self.heading_pending {
            self.heading_pending = false;
            self.heading(t);
            return;
        }
        if self.tag_pending {
            self.tag_pending = false;
            let indent = " ".repeat(4 * self.rs_depth);
            self.out.push_str(&indent);
            self.out.push_str(t.trim());
            self.out.push('\n');
            return;
        }
        if self.nofill {
            let indent = self.indent();
            self.out.push_str(&indent);
            self.out.push_str(t.trim_end());
            self.out.push('\n');
            return;
        }
        let t = t.trim();
        if t.is_empty() {
            return;
        }
        if self.para.is_empty() {
            if self.para_prefix.is_empty() {
                self.para_prefix = self.indent();
            }
        } else if !self.para.ends_with(' ') {
            self.para.push(' ');
        }
        self.para.push_str(t);
    }

    fn heading(&mut self, t: &str) {
        self.paragraph();
        self.out.push_str(t.trim());
        self.out.push('\n');
    }

    /// Processes one input line; returns false for a `.so` redirection page.
    fn line(&mut self, line: &str) -> bool {
        if self.in_macro_def {
            if line.starts_with("..") {
                self.in_macro_def = false;
            }
            return true;
        }
        if let Some(rest) = line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) {
            return self.request(rest);
        }
        if let Some(table) = &mut self.table {
            if !table.format_done {
                let t = line.trim();
                if let Some(i) = t.find("tab(")
                    && let Some(c) = t[i + 4..].chars().next()
                {
                    table.tab = c;
                }
                if t.ends_with('.') {
                    table.format_done = true;
                }
                return true;
            }
            let tab = table.tab;
            let t = line.trim();
            if t == "_" || t == "=" {
                return true;
            }
            let cells: Vec<String> = t
                .split(tab)
                .map(|c| unescape(c.trim().trim_start_matches("T{").trim_end_matches("T}")).trim().to_string())
                .collect();
            let row = cells.join("  ");
            if !row.trim().is_empty() {
                self.flush();
                let indent = self.indent();
                self.out.push_str(&indent);
                self.out.push_str(row.trim_end());
                self.out.push('\n');
            }
            return true;
        }
        if line.trim().is_empty() {
            if self.nofill {
                self.out.push('\n');
            } else {
                self.paragraph();
            }
            return true;
        }
        if !self.nofill && line.starts_with([' ', '\t']) {
            // A leading space breaks the line in roff.
            self.flush();
        }
        let t = unescape(line);
        self.text(&t);
        true
    }

    fn request(&mut self, rest: &str) -> bool {
        let rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with("\\\"") || rest.starts_with("\\#") {
            return true;
        }
        let (name, args) = match rest.find([' ', '\t']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let args = split_args(args);
        let joined = |sep: &str| args.iter().map(|a| unescape(a)).collect::<Vec<_>>().join(sep);
        match name {
            "so" => return false,
            "TH" => {
                let title = args.first().map(|a| unescape(a)).unwrap_or_default();
                let section = args.get(1).map(|a| unescape(a)).unwrap_or_default();
                self.heading(&format!("{title}({section})"));
            }
            "SH" | "SS" => {
                self.rs_depth = 0;
                self.body_indent = 0;
                self.tag_pending = false;
                if args.is_empty() {
                    self.heading_pending = true;
                    self.paragraph();
                } else {
                    let t = joined(" ");
                    self.heading(&t);
                }
            }
            "PP" | "P" | "LP" | "HP" => {
                self.body_indent = 0;
                self.paragraph();
            }
            "sp" => self.paragraph(),
            "br" => self.flush(),
            "TP" => {
                self.paragraph();
                self.body_indent = 4;
                self.tag_pending = true;
            }
            "TQ" => {
                self.flush();
                self.tag_pending = true;
            }
            "IP" => {
                self.paragraph();
                self.body_indent = 4;
                let tag = args.first().map(|a| unescape(a)).unwrap_or_default();
                if !tag.trim().is_empty() {
                    self.para_prefix = format!("{}{} ", " ".repeat(4 * self.rs_depth + 2), tag.trim());
                }
            }
            "RS" | "INDENT" => {
                self.flush();
                self.rs_depth += 1;
            }
            "RE" | "UNINDENT" => {
                self.flush();
                self.rs_depth = self.rs_depth.saturating_sub(1);
            }
            "nf" | "EX" => {
                self.flush();
                self.nofill = true;
            }
            "fi" | "EE" => {
                self.flush();
                self.nofill = false;
            }
            "B" | "I" | "SM" | "SB" if !args.is_empty() => {
                let t = joined(" ");
                self.text(&t);
            }
            "BR" | "BI" | "IB" | "IR" | "RB" | "RI" => {
                let t = joined("");
                self.text(&t);
            }
            "UR" | "MT" => self.url = args.first().map(|a| unescape(a)),
            "UE" | "ME" => {
                if let Some(url) = self.url.take() {
                    let t = format!("<{url}>{}", joined(""));
                    self.text(&t);
                }
            }
            "SY" => {
                self.paragraph();
                let t = joined(" ");
                self.text(&t);
            }
            "OP" => {
                let t = format!("[{}]", joined(" "));
                self.text(&t);
            }
            "YS" => self.paragraph(),
            "TS" => {
                self.flush();
                self.table = Some(Table { format_done: false, tab: '\t' });
            }
            "TE" => {
                self.flush();
                self.table = None;
            }
            "de" | "de1" | "am" | "ig" => self.in_macro_def = true,
            _ => {}
        }
        true
    }

    fn finish(mut self) -> String {
        self.flush();
        let mut out = String::with_capacity(self.out.len());
        let mut blank = 0;
        for line in self.out.lines() {
            if line.trim().is_empty() {
                blank += 1;
                continue;
            }
            if blank > 0 && !out.is_empty() {
                out.push('\n');
            }
            blank = 0;
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Splits request arguments: blanks separate, double quotes group (`""` inside is a quote).
fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                    if c == '\\'
                        && let Some(n) = chars.next()
                    {
                        arg.push(n);
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                chars.next();
                arg.push(c);
                if c == '\\'
                    && let Some(n) = chars.next()
                {
                    arg.push(n);
                }
            }
            if arg.starts_with("\\\"") {
                break; // comment
            }
        }
        args.push(arg);
    }
    args
}

/// Reads an escape's name: `(xx`, `[name]` or a single character.
fn read_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    match chars.next() {
        Some('(') => chars.by_ref().take(2).collect(),
        Some('[') => chars.by_ref().take_while(|&c| c != ']').collect(),
        Some(c) => c.to_string(),
        None => String::new(),
    }
}

/// Skips a delimited escape argument such as `'...'`.
fn skip_delimited(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    if let Some(delim) = chars.next() {
        for c in chars.by_ref() {
            if c == delim {
                break;
            }
        }
    }
}

/// Replaces roff escapes in a text fragment with their characters; drops font, size, motion and
/// other formatting escapes; stops at a `\"` comment.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { break };
        match e {
            '\\' | 'e' | 'E' => out.push('\\'),
            '-' => out.push('-'),
            '.' => out.push('.'),
            '\'' => out.push('\''),
            '`' => out.push('`'),
            ' ' | '~' | '0' => out.push(' '),
            't' => out.push('\t'),
            '"' | '#' => {
                let trimmed = out.trim_end().len();
                out.truncate(trimmed);
                break;
            }
            '&' | '|' | '^' | '%' | ':' | ')' | ',' | '/' | 'c' | 'a' | 'd' | 'u' | 'r' | 'p' | '{' | '}' | 'z' => {}
            'f' | 'F' | 'g' | 'k' | 'm' | 'M' | 'V' | 'Y' | '$' | 'O' => {
                read_name(&mut chars);
            }
            'n' => {
                if matches!(chars.peek(), Some('+') | Some('-')) {
                    chars.next();
                }
                read_name(&mut chars);
            }
            's' => {
                if matches!(chars.peek(), Some('+') | Some('-')) {
                    chars.next();
                }
                match chars.peek() {
                    Some('(') | Some('[') => {
                        read_name(&mut chars);
                    }
                    Some('\'') => skip_delimited(&mut chars),
                    _ => {
                        chars.next();
                    }
                }
            }
            '(' => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(&special_char(&name));
            }
            '[' => {
                let name: String = chars.by_ref().take_while(|&c| c != ']').collect();
                out.push_str(&special_char(&name));
            }
            'C' => {
                if let Some(delim) = chars.next() {
                    let name: String = chars.by_ref().take_while(|&c| c != delim).collect();
                    out.push_str(&special_char(&name));
                }
            }
            '*' => {
                let name = read_name(&mut chars);
                out.push_str(predefined_string(&name));
            }
            'h' | 'v' | 'w' | 'o' | 'l' | 'L' | 'X' | 'Z' | 'D' | 'b' | 'x' | 'S' | 'H' | 'N' | 'R' | 'A' | 'B' => {
                skip_delimited(&mut chars);
            }
            other => out.push(other),
        }
    }
    out
}

fn predefined_string(name: &str) -> &'static str {
    match name {
        "lq" => "\u{201C}",
        "rq" => "\u{201D}",
        "R" => "\u{00AE}",
        "Tm" => "\u{2122}",
        "-" => "\u{2014}",
        "dg" => "\u{2020}",
        _ => "",
    }
}

/// The text of a special character `\(xx` / `\[name]`.
fn special_char(name: &str) -> String {
    let s = match name {
        "em" => "\u{2014}",
        "en" => "\u{2013}",
        "hy" | "mi" | "-" => "-",
        "aq" => "'",
        "dq" => "\"",
        "lq" => "\u{201C}",
        "rq" => "\u{201D}",
        "oq" => "\u{2018}",
        "cq" => "\u{2019}",
        "Bq" => "\u{201E}",
        "bq" => "\u{201A}",
        "Fo" => "\u{00AB}",
        "Fc" => "\u{00BB}",
        "fo" => "\u{2039}",
        "fc" => "\u{203A}",
        "bu" => "\u{2022}",
        "co" => "\u{00A9}",
        "rg" => "\u{00AE}",
        "tm" => "\u{2122}",
        "ha" | "a^" => "^",
        "ti" | "a~" => "~",
        "ga" => "`",
        "aa" => "\u{00B4}",
        "rs" => "\\",
        "sl" => "/",
        "pl" => "+",
        "eq" => "=",
        "+-" | "pm" => "\u{00B1}",
        "mu" => "\u{00D7}",
        "di" => "\u{00F7}",
        "de" => "\u{00B0}",
        "dg" => "\u{2020}",
        "dd" => "\u{2021}",
        "sd" => "\u{2033}",
        "fm" => "\u{2032}",
        "la" => "\u{27E8}",
        "ra" => "\u{27E9}",
        "->" => "\u{2192}",
        "<-" => "\u{2190}",
        "<=" => "\u{2264}",
        ">=" => "\u{2265}",
        "!=" => "\u{2260}",
        "==" => "\u{2261}",
        "~=" | "=~" => "\u{2245}",
        "~~" | "|=" => "\u{2248}",
        "if" => "\u{221E}",
        "sc" => "\u{00A7}",
        "ps" => "\u{00B6}",
        "mc" => "\u{00B5}",
        "ct" => "\u{00A2}",
        "Po" => "\u{00A3}",
        "Eu" | "eu" => "\u{20AC}",
        "Ye" => "\u{00A5}",
        "Do" => "$",
        "at" => "@",
        "sh" => "#",
        "lB" => "[",
        "rB" => "]",
        "lC" => "{",
        "rC" => "}",
        "or" | "ba" | "br" => "|",
        "ul" | "ru" => "_",
        "pc" => "\u{00B7}",
        "ua" => "\u{2191}",
        "da" => "\u{2193}",
        "ss" => "\u{00DF}",
        "ae" => "\u{00E6}",
        "AE" => "\u{00C6}",
        "o/" => "\u{00F8}",
        "O/" => "\u{00D8}",
        "sp" | "space" => " ",
        _ => "",
    };
    if !s.is_empty() || name.is_empty() {
        return s.to_string();
    }
    // Unicode escapes: \[u00E9], \[u0065_0301].
    if let Some(hex) = name.strip_prefix('u') {
        let decoded: Option<String> = hex.split('_').map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32)).collect();
        if let Some(d) = decoded {
            return d;
        }
    }
    // Accented letters: \['a], \[:o], \[`e], \[^i], \[~n], \[,c].
    let mut it = name.chars();
    if let (Some(accent), Some(letter), None) = (it.next(), it.next(), it.next()) {
        let mark = match accent {
            '\'' => Some('\u{0301}'),
            '`' => Some('\u{0300}'),
            '^' => Some('\u{0302}'),
            '~' => Some('\u{0303}'),
            ':' => Some('\u{0308}'),
            ',' => Some('\u{0327}'),
            'o' => Some('\u{030A}'),
            'v' => Some('\u{030C}'),
            _ => None,
        };
        if let (Some(mark), true) = (mark, letter.is_ascii_alphabetic()) {
            return [letter, mark].iter().collect();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_common_man_macros() {
        let src = r#".\" comment line
.TH open 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
open, openat \- open and possibly create a file
.SH SYNOPSIS
.nf
.B #include <fcntl.h>
.PP
.BI "int open(const char *" pathname ", int " flags );
.fi
.SH DESCRIPTION
The
.BR open ()
system call opens the file specified by
.IR pathname .
It uses \fBbold\fP and \fIitalic\fR fonts, \(em dashes, \[aq]quotes\[aq] \" trailing comment
and a \[u00E9] and \['e] and a very long \
continued line.
.TP
.B O_CREAT
If it does not exist, create it.
.IP \[bu] 3
A bullet.
.TS
tab(;);
l l.
A;B
_
C;D
.TE
.de XX
ignored macro body
..
See
.UR https://example.org
the site
.UE .
"#;
        let text = man_to_text(src).unwrap();
        let expected = "open(2)\n\nNAME\nopen, openat - open and possibly create a file\n\nSYNOPSIS\n#include <fcntl.h>\n\n\
int open(const char *pathname, int flags);\n\nDESCRIPTION\nThe open() system call opens the file specified by pathname. \
It uses bold and italic fonts, \u{2014} dashes, 'quotes' and a \u{e9} and e\u{301} and a very long continued line.\n\n\
O_CREAT\n    If it does not exist, create it.\n\n  \u{2022} A bullet.\n    A  B\n    C  D\n    See the site <https://example.org>.\n";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn so_redirect_is_skipped() {
        assert_eq!(man_to_text(".so man2/open.2\n"), None);
    }

    #[test]
    fn args_and_escapes() {
        assert_eq!(split_args(r#"a "b c" "d""e" \"x"#), vec!["a", "b c", "d\"e"]);
        assert_eq!(unescape(r"\s-1SMALL\s0 \-\e\\ \*(lqq\*(rq \h'2n'x\w'abc'"), "SMALL -\\\\ \u{201C}q\u{201D} x");
    }
}
