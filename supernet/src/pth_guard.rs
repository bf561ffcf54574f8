//! What a PyTorch `.pth` may hold before any of it is interpreted. `torch.load(weights_only=False)`
//! runs whatever callable a pickle names (`os.system` through `REDUCE`); this reader never calls
//! anything, and it refuses such files outright: every pickle stream is walked opcode by opcode on
//! a shadow stack, and a global outside the few a state_dict needs is an error naming it. Zip
//! archives are checked by their declared sizes before anything is inflated.

use std::io::{Cursor, Read};

use crate::error::{Result, SupernetError};
use std::path::Path;

/// Sum of declared uncompressed sizes allowed, as a multiple of the archive's size (torch.save
/// stores entries uncompressed: its ratio is 1).
const MAX_INFLATION: u64 = 16;
/// Largest entry, bytes.
const MAX_ENTRY: u64 = 8 << 30;
/// Largest pickle stream, bytes (a state_dict's pickle is kilobytes to megabytes).
const MAX_PICKLE: u64 = 256 << 20;
/// Pickle streams at the start of a legacy (pre-1.6) file: magic, protocol, sys info, the object,
/// the storage keys; raw storage bytes follow.
const LEGACY_PICKLES: usize = 5;

/// The globals a state_dict pickle may name (module, name).
fn allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch" => {
            name.ends_with("Storage")
                || matches!(
                    name,
                    "Tensor"
                        | "float32"
                        | "float64"
                        | "float16"
                        | "bfloat16"
                        | "int64"
                        | "int32"
                        | "int16"
                        | "int8"
                        | "uint8"
                        | "bool"
                )
        }
        // how protocol-2 pickles spell bytes
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// Check the `.pth` file `path` (its bytes `bytes`) before it is read.
pub(crate) fn check(path: &Path, bytes: &[u8]) -> Result<()> {
    let bad = |reason: String| SupernetError::bad_file(path, reason);
    if bytes.starts_with(b"PK\x03\x04") {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("not a readable zip archive ({e})")))?;
        let mut declared = 0u64;
        let mut pickles = Vec::new();
        for i in 0..zip.len() {
            let f = zip
                .by_index_raw(i)
                .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
            let (size, packed) = (f.size(), f.compressed_size());
            let name = f
                .name()
                .map(|n| n.into_owned())
                .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
            if size > MAX_ENTRY {
                return Err(bad(format!(
                    "zip entry `{name}` declares {size} bytes (more than {MAX_ENTRY})"
                )));
            }
            declared = declared.saturating_add(size);
            if declared > MAX_INFLATION * bytes.len() as u64 + (1 << 20) {
                return Err(bad(format!(
                    "the archive declares {declared} bytes uncompressed from {} bytes (entry `{name}`: {size} from {packed}): refused as a zip bomb",
                    bytes.len()
                )));
            }
            if name.ends_with(".pkl") {
                pickles.push((i, name, size));
            }
        }
        if pickles.is_empty() {
            return Err(bad("the archive holds no pickle (`data.pkl`)".into()));
        }
        for (i, name, size) in pickles {
            if size > MAX_PICKLE {
                return Err(bad(format!("`{name}` declares {size} bytes of pickle")));
            }
            let mut f = zip.by_index(i).map_err(|e| bad(format!("`{name}`: {e}")))?;
            let mut data = Vec::with_capacity(size as usize);
            f.by_ref()
                .take(MAX_PICKLE + 1)
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("`{name}`: {e}")))?;
            if data.len() as u64 > size.max(MAX_PICKLE) {
                return Err(bad(format!("`{name}` inflates past its declared size")));
            }
            scan(&data).map_err(|e| bad(format!("`{name}`: {e}")))?;
        }
        return Ok(());
    }
    // Legacy format: consecutive pickles, then raw storage bytes.
    let mut at = 0;
    for k in 0..LEGACY_PICKLES {
        let used =
            scan(&bytes[at..]).map_err(|e| bad(format!("pickle {} of the file: {e}", k + 1)))?;
        at += used;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Mark,
    Other,
}

/// `n` bytes of `p` from `*i` (advanced).
fn take<'a>(p: &'a [u8], i: &mut usize, n: usize) -> std::result::Result<&'a [u8], String> {
    let end = i
        .checked_add(n)
        .filter(|&e| e <= p.len())
        .ok_or_else(|| format!("truncated at byte {i}"))?;
    let s = &p[*i..end];
    *i = end;
    Ok(s)
}

/// A little-endian unsigned integer.
fn uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}

/// The text up to the next newline (consumed).
fn line(p: &[u8], i: &mut usize) -> std::result::Result<String, String> {
    let rest = &p[*i..];
    let n = rest
        .iter()
        .position(|&c| c == b'\n')
        .ok_or_else(|| format!("unterminated line at byte {i}"))?;
    *i += n + 1;
    Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
}

/// Walk one pickle stream to its STOP; returns the bytes it spans. Refuses unknown opcodes,
/// disallowed globals, extension codes and malformed streams.
pub(crate) fn scan(p: &[u8]) -> std::result::Result<usize, String> {
    let mut i = 0usize;
    let mut stack: Vec<V> = Vec::new();
    let mut memo: std::collections::HashMap<u64, V> = std::collections::HashMap::new();
    let take = |i: &mut usize, n: usize| take(p, i, n);
    let line = |i: &mut usize| line(p, i);
    fn pop(stack: &mut Vec<V>, n: usize) -> std::result::Result<Vec<V>, String> {
        if stack.len() < n {
            return Err("stack underflow".into());
        }
        Ok(stack.split_off(stack.len() - n))
    }
    fn pop_mark(stack: &mut Vec<V>) -> std::result::Result<Vec<V>, String> {
        let m = stack
            .iter()
            .rposition(|v| *v == V::Mark)
            .ok_or("no MARK on the stack")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    }
    let check_global = |module: &str, name: &str| {
        if allowed(module, name) {
            Ok(())
        } else {
            Err(format!(
                "refused: the pickle names the global `{module}.{name}`, which a state_dict never needs (loading it with torch.load(weights_only=False) would call it)"
            ))
        }
    };
    loop {
        let op = *take(&mut i, 1)?.first().unwrap_or(&0);
        match op {
            b'.' => return Ok(i),
            0x80 => {
                take(&mut i, 1)?;
            }
            0x95 => {
                take(&mut i, 8)?;
            }
            b'(' => stack.push(V::Mark),
            b'N' | 0x88 | 0x89 | b']' | b')' | b'}' | 0x8f => stack.push(V::Other),
            b'J' => {
                take(&mut i, 4)?;
                stack.push(V::Other);
            }
            b'K' => {
                take(&mut i, 1)?;
                stack.push(V::Other);
            }
            b'M' => {
                take(&mut i, 2)?;
                stack.push(V::Other);
            }
            b'G' => {
                take(&mut i, 8)?;
                stack.push(V::Other);
            }
            0x8a | 0x8b | b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                let w = match op {
                    0x8a | b'U' | b'C' => 1,
                    0x8b | b'T' | b'B' => 4,
                    _ => 8,
                };
                let n = uint(take(&mut i, w)?);
                let n = usize::try_from(n).map_err(|_| "length overflows".to_string())?;
                take(&mut i, n)?;
                stack.push(V::Other);
            }
            b'X' | 0x8c | 0x8d => {
                let w = match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                };
                let n = usize::try_from(uint(take(&mut i, w)?))
                    .map_err(|_| "length overflows".to_string())?;
                let s = String::from_utf8_lossy(take(&mut i, n)?).into_owned();
                stack.push(V::Str(s));
            }
            b'I' | b'L' | b'F' => {
                line(&mut i)?;
                stack.push(V::Other);
            }
            b'S' | b'V' => {
                let s = line(&mut i)?;
                stack.push(V::Str(
                    s.trim_matches(|c| c == '\'' || c == '"').to_string(),
                ));
            }
            b'P' => {
                line(&mut i)?;
                stack.push(V::Other);
            }
            b'Q' => {
                pop(&mut stack, 1)?;
                stack.push(V::Other);
            }
            b'c' => {
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                check_global(&module, &name)?;
                stack.push(V::Other);
            }
            0x93 => {
                let v = pop(&mut stack, 2)?;
                match (&v[0], &v[1]) {
                    (V::Str(m), V::Str(n)) => check_global(m, n)?,
                    _ => return Err("STACK_GLOBAL on values that are not strings".into()),
                }
                stack.push(V::Other);
            }
            b'i' => {
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                return Err(format!("refused: INST of `{module}.{name}`"));
            }
            0x82..=0x84 => return Err("refused: an extension-registry code (EXT)".into()),
            b'0' => {
                pop(&mut stack, 1)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or("stack underflow")?;
                stack.push(top);
            }
            b'a' | b'b' => {
                pop(&mut stack, 1)?;
            }
            b's' => {
                pop(&mut stack, 2)?;
            }
            b'e' | b'u' | 0x90 => {
                pop_mark(&mut stack)?;
            }
            b'l' | b't' | b'd' | 0x91 | b'o' => {
                pop_mark(&mut stack)?;
                stack.push(V::Other);
            }
            0x85..=0x87 => {
                pop(&mut stack, usize::from(op - 0x84))?;
                stack.push(V::Other);
            }
            b'R' | 0x81 => {
                pop(&mut stack, 2)?;
                stack.push(V::Other);
            }
            0x92 => {
                pop(&mut stack, 3)?;
                stack.push(V::Other);
            }
            0x97 => stack.push(V::Other),
            0x98 => {}
            b'p' => {
                let k = line(&mut i)?
                    .parse::<u64>()
                    .map_err(|_| "bad PUT index".to_string())?;
                memo.insert(k, stack.last().cloned().ok_or("stack underflow")?);
            }
            b'q' | b'r' => {
                let k = uint(take(&mut i, if op == b'q' { 1 } else { 4 })?);
                memo.insert(k, stack.last().cloned().ok_or("stack underflow")?);
            }
            0x94 => {
                let k = memo.len() as u64;
                memo.insert(k, stack.last().cloned().ok_or("stack underflow")?);
            }
            b'g' => {
                let k = line(&mut i)?
                    .parse::<u64>()
                    .map_err(|_| "bad GET index".to_string())?;
                stack.push(memo.get(&k).cloned().ok_or("GET of an unset memo")?);
            }
            b'h' | b'j' => {
                let k = uint(take(&mut i, if op == b'h' { 1 } else { 4 })?);
                stack.push(memo.get(&k).cloned().ok_or("GET of an unset memo")?);
            }
            other => {
                return Err(format!(
                    "unknown pickle opcode 0x{other:02x} at byte {}",
                    i - 1
                ))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dict_pickle_passes_and_os_system_is_named() {
        // protocol 2, a GLOBAL of the allowlist, a tensor rebuild shape
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
        assert_eq!(scan(ok).unwrap(), ok.len());
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.";
        let e = scan(evil).unwrap_err();
        assert!(e.contains("`os.system`"), "{e}");
        // protocol 4 STACK_GLOBAL, with the name fetched back from the memo
        let evil4 = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x94\x85\x94R\x94.";
        let e = scan(evil4).unwrap_err();
        assert!(e.contains("`builtins.eval`"), "{e}");
        let via_memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93.";
        assert!(scan(via_memo).unwrap_err().contains("`os.system`"));
        assert!(scan(b"\x80\x02ios\nsystem\n.")
            .unwrap_err()
            .contains("INST"));
        assert!(scan(b"\x80\x02\x82\x01.")
            .unwrap_err()
            .contains("extension"));
        // malformed: truncated, underflow, unknown opcode
        assert!(scan(b"\x80\x02X\xff\xff\x00\x00ab")
            .unwrap_err()
            .contains("truncated"));
        assert!(scan(b"R.").unwrap_err().contains("underflow"));
        assert!(scan(b"\xff").unwrap_err().contains("unknown pickle opcode"));
    }
}
