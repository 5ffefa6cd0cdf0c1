//! Identifiers and literals written into SQL text. Names come from the source database and
//! values from its rows, so these two functions are all that stands between a column
//! called `x" ; DROP TABLE t; --` and a broken statement; the fuzz targets parse their
//! output back.

/// A double-quoted identifier, valid in DuckDB and Snowflake: the name is kept exactly as
/// spelt (case, spaces, dots, unicode) and `"` is doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A Snowflake single-quoted string literal. Snowflake treats `\` as an escape inside
/// these, so it is doubled along with `'`; NUL is written as its escape.
pub fn snowflake_string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
