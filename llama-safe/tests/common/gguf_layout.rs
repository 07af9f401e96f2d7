//! A GGUF file taken apart for mutation tests: where every field lies (for
//! byte edits in place) and its metadata as values (for rewrites that keep
//! the file well-formed but change what it says).

/// Value type ids of the GGUF format.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata entry: its key, type and encoded value, and where its
/// fields lie in the file.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub ty: u32,
    /// The value as encoded after the type id.
    pub value: Vec<u8>,
    pub key_len_at: usize,
    pub type_at: usize,
    pub value_at: usize,
}

/// One tensor-table entry and where its fields lie.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub name_len_at: usize,
    pub n_dims_at: usize,
    pub dims_at: Vec<usize>,
    pub type_at: usize,
    pub offset_at: usize,
}

/// A parsed GGUF file.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bytes: Vec<u8>,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<TensorEntry>,
    /// End of the metadata (start of the tensor table).
    pub kv_end: usize,
    /// End of the tensor table.
    pub table_end: usize,
    /// Start of the tensor data.
    pub data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            ty::U8 | ty::I8 | ty::BOOL => self.at += 1,
            ty::U16 | ty::I16 => self.at += 2,
            ty::U32 | ty::I32 | ty::F32 => self.at += 4,
            ty::U64 | ty::I64 | ty::F64 => self.at += 8,
            ty::STRING => {
                let n = self.u64() as usize;
                self.at += n;
            }
            ty::ARRAY => {
                let elem = self.u32();
                let n = self.u64();
                for _ in 0..n {
                    self.skip_value(elem);
                }
            }
            other => panic!("unknown GGUF type {other}"),
        }
    }
}

impl Layout {
    /// Parses a well-formed GGUF file (the demo models).
    pub fn parse(bytes: Vec<u8>) -> Layout {
        let mut c = Cursor { b: &bytes, at: 4 };
        let _version = c.u32();
        let n_tensors = c.u64();
        let n_kv = c.u64();
        let mut kvs = Vec::new();
        for _ in 0..n_kv {
            let key_len_at = c.at;
            let key = c.string();
            let type_at = c.at;
            let ty = c.u32();
            let value_at = c.at;
            c.skip_value(ty);
            kvs.push(Kv {
                key,
                ty,
                value: bytes[value_at..c.at].to_vec(),
                key_len_at,
                type_at,
                value_at,
            });
        }
        let kv_end = c.at;
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name_len_at = c.at;
            let name = c.string();
            let n_dims_at = c.at;
            let n_dims = c.u32();
            let dims_at = (0..n_dims)
                .map(|_| {
                    let at = c.at;
                    c.u64();
                    at
                })
                .collect();
            let type_at = c.at;
            c.u32();
            let offset_at = c.at;
            c.u64();
            tensors.push(TensorEntry {
                name,
                name_len_at,
                n_dims_at,
                dims_at,
                type_at,
                offset_at,
            });
        }
        let table_end = c.at;
        let data_start = table_end.next_multiple_of(32);
        Layout {
            bytes,
            kvs,
            tensors,
            kv_end,
            table_end,
            data_start,
        }
    }

    pub fn kv(&self, key: &str) -> Option<&Kv> {
        self.kvs.iter().find(|kv| kv.key == key)
    }

    /// The file with its metadata replaced by `kvs` (tensor table and data
    /// unchanged, the data re-aligned to 32 bytes as the demo files are).
    pub fn rebuild(&self, kvs: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = self.bytes[..8].to_vec();
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, ty, value) in kvs {
            out.extend_from_slice(&(key.len() as u64).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&self.bytes[self.kv_end..self.table_end]);
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend_from_slice(&self.bytes[self.data_start..]);
        out
    }

    /// The metadata as `(key, type, value)` triples, for [`rebuild`](Self::rebuild).
    pub fn kv_triples(&self) -> Vec<(String, u32, Vec<u8>)> {
        self.kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.ty, kv.value.clone()))
            .collect()
    }
}

/// Encodes a string value.
pub fn string_value(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Decodes the strings of an encoded string-array value.
pub fn string_array_items(value: &[u8]) -> Vec<String> {
    let mut c = Cursor { b: value, at: 0 };
    assert_eq!(c.u32(), ty::STRING);
    let n = c.u64();
    (0..n).map(|_| c.string()).collect()
}

/// Encodes a string-array value.
pub fn string_array_value(items: &[String]) -> Vec<u8> {
    let mut v = ty::STRING.to_le_bytes().to_vec();
    v.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for s in items {
        v.extend_from_slice(&string_value(s));
    }
    v
}
