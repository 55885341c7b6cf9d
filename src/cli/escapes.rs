//! `append -e`: backslash escapes in DATA, as `echo -e` reads them, so that
//! `raftlock append f -e 'line\n'` appends a line break where the shell would pass a backslash
//! and an `n`.

/// Expands the escapes of `echo -e` in `text`: `\\`, `\a`, `\b`, `\e`, `\f`, `\n`, `\r`, `\t`,
/// `\v`, `\0NNN` (up to three octal digits), `\xHH` (one or two hex digits), and `\c`, which
/// ends the data there. Any other backslash is kept as it is, as echo does.
pub fn expand(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'\\' || i == bytes.len() {
            out.push(b);
            continue;
        }
        let escape = bytes[i];
        i += 1;
        let simple = match escape {
            b'\\' => Some(b'\\'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'e' => Some(0x1b),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            continue;
        }
        match escape {
            b'c' => break,
            b'0' => out.push(digits(bytes, &mut i, 8, 3)),
            b'x' if bytes.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                out.push(digits(bytes, &mut i, 16, 2));
            }
            other => out.extend_from_slice(&[b'\\', other]),
        }
    }
    out
}

/// Reads up to `max` digits of `radix` at `*i` as one byte (octal wraps like echo's: `\0777`
/// is 0o777 modulo 256).
fn digits(bytes: &[u8], i: &mut usize, radix: u32, max: usize) -> u8 {
    let mut value: u32 = 0;
    for _ in 0..max {
        let Some(d) = bytes.get(*i).and_then(|&b| char::from(b).to_digit(radix)) else {
            break;
        };
        value = value * radix + d;
        *i += 1;
    }
    (value & 0xff) as u8
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_like_echo_e() {
        assert_eq!(expand(r"line\n"), b"line\n");
        assert_eq!(expand(r"a\tb\\c"), b"a\tb\\c");
        assert_eq!(expand(r"\x41\x4a\xff\x0"), [b'A', b'J', 0xff, 0]);
        assert_eq!(expand(r"\0101\0"), [b'A', 0]);
        assert_eq!(expand(r"\e[0m\a\b\f\v\r"), b"\x1b[0m\x07\x08\x0c\x0b\r");
        assert_eq!(expand(r"keep\q and \xZZ"), br"keep\q and \xZZ");
        assert_eq!(expand(r"stop\chere"), b"stop");
        assert_eq!(expand("trailing\\"), b"trailing\\");
        assert_eq!(expand("é\\n"), "é\n".as_bytes());
    }
}
