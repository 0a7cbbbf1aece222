//! Damaged checkpoints for the mutation tests, derived from valid files: byte damage to any
//! format (truncation, flipped bytes in the header, the body and the tail, where a zip keeps its
//! directory), and for safetensors and burnpack files, structural damage re-encoded with the
//! formats' own crates: tensors missing, renamed, extra, reshaped, retyped, holding NaN or
//! infinity, or declared enormous.

use std::collections::BTreeMap;

use burn::tensor::{DType, TensorData};
use burn_store::burn_pack;
use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors};

pub use repvgg_deploy::Format;

/// How one valid file is damaged.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Keep the first `fraction` of the bytes.
    Truncate(f64),
    /// XOR bytes at these relative positions with these masks.
    Flip(Vec<(f64, u8)>),
    /// The same within the first 4 KiB (headers, pickle opcodes).
    FlipHeader(Vec<(usize, u8)>),
    /// The same within the last 1 KiB (a zip's central directory and its sizes).
    FlipTail(Vec<(usize, u8)>),
    /// Damage to the structure, re-encoded as a well-formed file.
    Edit(Edit),
}

/// Structural damage; `usize`s pick a tensor (modulo the count).
#[derive(Clone, Copy, Debug)]
pub enum Edit {
    /// A tensor the network needs is left out.
    Drop(usize),
    /// A tensor the network needs is stored under another name.
    Rename(usize),
    /// A tensor nobody asked for is added.
    Extra(usize),
    /// A tensor's first dimension loses (or gains) a slice.
    Reshape(usize),
    /// A tensor is stored in another element type (f16, bf16, f64, i64, i32, u8).
    Retype(usize, DType),
    /// A float tensor holds this value (NaN or an infinity).
    Poison(usize, f32),
    /// The header declares a tensor far larger than the file (shape and extent).
    Enormous(usize),
    /// The header declares its own length enormous.
    HugeHeader,
}

impl Mutation {
    /// Whether every reader must refuse the result: damage that leaves a network without its
    /// weights, with weights of the wrong shape, with non-finite values, or a header that lies.
    pub fn must_fail(&self) -> bool {
        matches!(
            self,
            Mutation::Edit(
                Edit::Drop(_)
                    | Edit::Rename(_)
                    | Edit::Reshape(_)
                    | Edit::Poison(..)
                    | Edit::Enormous(_)
                    | Edit::HugeHeader
            )
        )
    }

    /// Whether the result must read as the original did: the same weights in another float type.
    pub fn must_load(&self) -> bool {
        matches!(
            self,
            Mutation::Edit(Edit::Retype(_, DType::F16 | DType::BF16 | DType::F64))
        )
    }
}

/// Damage to the bytes of any file: truncation and flipped bytes.
pub fn byte_damage() -> BoxedStrategy<Mutation> {
    let flips = |range: std::ops::Range<usize>| prop::collection::vec((range, 1..=255u8), 1..8);
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        prop::collection::vec((0.0..1.0f64, 1..=255u8), 1..8).prop_map(Mutation::Flip),
        flips(0..4096).prop_map(Mutation::FlipHeader),
        flips(0..1024).prop_map(Mutation::FlipTail),
    ]
    .boxed()
}

/// Damage for `format`: byte damage always, structural damage where the format has a crate to
/// re-encode it.
pub fn mutation(format: Format) -> BoxedStrategy<Mutation> {
    if format == Format::Pytorch {
        return byte_damage();
    }
    let dtype = prop::sample::select(vec![
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::U8,
    ]);
    let poison = prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Drop),
        any::<usize>().prop_map(Edit::Rename),
        any::<usize>().prop_map(Edit::Extra),
        any::<usize>().prop_map(Edit::Reshape),
        (any::<usize>(), dtype).prop_map(|(i, d)| Edit::Retype(i, d)),
        (any::<usize>(), poison).prop_map(|(i, v)| Edit::Poison(i, v)),
        any::<usize>().prop_map(Edit::Enormous),
        Just(Edit::HugeHeader),
    ];
    prop_oneof![byte_damage(), edit.prop_map(Mutation::Edit)].boxed()
}

/// `bytes` (a valid file of `format`) damaged by `mutation`.
pub fn apply(bytes: &[u8], format: Format, mutation: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len();
    match mutation {
        Mutation::Truncate(fraction) => out.truncate((len as f64 * fraction) as usize),
        Mutation::Flip(flips) => {
            for (at, mask) in flips {
                out[((len as f64 * at) as usize).min(len - 1)] ^= mask;
            }
        }
        Mutation::FlipHeader(flips) => {
            for (at, mask) in flips {
                out[at % len] ^= mask;
            }
        }
        Mutation::FlipTail(flips) => {
            for (at, mask) in flips {
                out[len - 1 - at % len] ^= mask;
            }
        }
        Mutation::Edit(edit) => out = edited(bytes, format, edit),
    }
    out
}

/// A tensor as the formats store it.
#[derive(Clone, Debug)]
struct Stored {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The tensors of a file and what it records beside them.
struct Contents {
    tensors: Vec<Stored>,
    metadata: BTreeMap<String, String>,
}

fn edited(bytes: &[u8], format: Format, edit: &Edit) -> Vec<u8> {
    let mut contents = decode(bytes, format);
    let tensors = &mut contents.tensors;
    // The tensors a network needs (BN's batch counters are dropped by the readers anyway).
    let needed: Vec<usize> = (0..tensors.len())
        .filter(|&i| !tensors[i].name.ends_with("num_batches_tracked"))
        .collect();
    let pick = |i: usize| needed[i % needed.len()];
    match *edit {
        Edit::Drop(i) => {
            tensors.remove(pick(i));
        }
        Edit::Rename(i) => tensors[pick(i)].name.push_str("_renamed"),
        Edit::Extra(i) => {
            let mut extra = tensors[pick(i)].clone();
            extra.name = format!("extra.{}", extra.name);
            tensors.push(extra);
        }
        Edit::Reshape(i) => {
            let tensor = &mut tensors[pick(i)];
            let slice = tensor.bytes.len() / tensor.shape[0];
            if tensor.shape[0] > 1 {
                tensor.shape[0] -= 1;
                tensor.bytes.truncate(tensor.bytes.len() - slice);
            } else {
                tensor.shape[0] = 2;
                tensor.bytes = tensor.bytes.repeat(2);
            }
        }
        Edit::Retype(i, dtype) => retype(&mut tensors[pick(i)], dtype),
        Edit::Poison(i, value) => {
            let floats: Vec<usize> = needed
                .iter()
                .copied()
                .filter(|&t| tensors[t].dtype == DType::F32)
                .collect();
            let tensor = &mut tensors[floats[i % floats.len()]];
            let at = 4 * (i % (tensor.bytes.len() / 4));
            tensor.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        Edit::Enormous(_) | Edit::HugeHeader => {}
    }
    let encoded = encode(&contents, format);
    match (*edit, format) {
        (Edit::Enormous(i), Format::Safetensors) => enormous_safetensors(&encoded, i),
        (Edit::Enormous(i), Format::Burnpack) => enormous_burnpack(encoded, i),
        (Edit::HugeHeader, Format::Safetensors) => {
            let mut out = encoded;
            out[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            out
        }
        (Edit::HugeHeader, Format::Burnpack) => {
            let mut out = encoded;
            // Magic (4 bytes), version (2), then the metadata's length (u32).
            out[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
            out
        }
        _ => encoded,
    }
}

/// `bytes` (a valid file of `format`) with every f32 tensor stored as `dtype`.
pub fn all_floats_as(bytes: &[u8], format: Format, dtype: DType) -> Vec<u8> {
    let mut contents = decode(bytes, format);
    for tensor in contents
        .tensors
        .iter_mut()
        .filter(|t| t.dtype == DType::F32)
    {
        retype(tensor, dtype);
    }
    encode(&contents, format)
}

fn retype(tensor: &mut Stored, dtype: DType) {
    let data = TensorData::from_bytes_vec(
        std::mem::take(&mut tensor.bytes),
        tensor.shape.clone(),
        tensor.dtype,
    );
    let shape = tensor.shape.clone();
    // Integers from floats as a careless export would make them: `as` (saturating) casts.
    let values = || data.iter::<f32>();
    let data = match dtype {
        DType::I64 => TensorData::new(values().map(|v| v as i64).collect(), shape),
        DType::I32 => TensorData::new(values().map(|v| v as i32).collect(), shape),
        DType::U8 => TensorData::new(values().map(|v| v as u8).collect(), shape),
        float => data.clone().convert_dtype(float),
    };
    tensor.bytes = data.as_bytes().to_vec();
    tensor.dtype = dtype;
}

fn decode(bytes: &[u8], format: Format) -> Contents {
    match format {
        Format::Safetensors => read_safetensors(bytes),
        Format::Burnpack => read_burnpack(bytes),
        Format::Pytorch => unreachable!("pickles are only damaged byte by byte"),
    }
}

fn encode(contents: &Contents, format: Format) -> Vec<u8> {
    match format {
        Format::Safetensors => write_safetensors(contents),
        Format::Burnpack => write_burnpack(contents),
        Format::Pytorch => unreachable!("pickles are only damaged byte by byte"),
    }
}

fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::U8 => Dtype::U8,
        other => panic!("no safetensors type for {other:?}"),
    }
}

fn burn_dtype(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        other => panic!("unexpected {other:?} in a fixture"),
    }
}

fn read_safetensors(bytes: &[u8]) -> Contents {
    let (_, metadata) = SafeTensors::read_metadata(bytes).unwrap();
    let file = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<Stored> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| Stored {
            name,
            dtype: burn_dtype(view.dtype()),
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Contents {
        tensors,
        metadata: metadata
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

fn write_safetensors(contents: &Contents) -> Vec<u8> {
    let views = contents.tensors.iter().map(|t| {
        let view = safetensors::tensor::TensorView::new(
            safetensors_dtype(t.dtype),
            t.shape.clone(),
            &t.bytes,
        )
        .unwrap();
        (t.name.clone(), view)
    });
    let metadata =
        (!contents.metadata.is_empty()).then(|| contents.metadata.clone().into_iter().collect());
    safetensors::serialize(views, metadata).unwrap()
}

fn read_burnpack(bytes: &[u8]) -> Contents {
    let reader =
        burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec())).unwrap();
    let metadata = reader.metadata().clone();
    let tensors = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .map(|tensor| {
            let name = tensor.name.clone();
            let data = burn_store::bridge::into_data(tensor).unwrap();
            Stored {
                name,
                dtype: data.dtype(),
                shape: data.shape().to_vec(),
                bytes: data.as_bytes().to_vec(),
            }
        })
        .collect();
    Contents { tensors, metadata }
}

fn write_burnpack(contents: &Contents) -> Vec<u8> {
    let tensors = contents
        .tensors
        .iter()
        .map(|t| {
            let data = TensorData::from_bytes_vec(t.bytes.clone(), t.shape.clone(), t.dtype);
            burn_store::bridge::from_data(data, t.name.clone(), None)
        })
        .collect();
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in &contents.metadata {
        writer = writer.with_metadata(key, value);
    }
    writer.into_bytes().unwrap().to_vec()
}

/// A safetensors file whose header gives tensor `i` a shape of 2^62 elements and an extent
/// ending 2^62 bytes in.
fn enormous_safetensors(bytes: &[u8], i: usize) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let entry = header.get_mut(&names[i % names.len()]).unwrap();
    entry["shape"] = serde_json::json!([1u64 << 31, 1u64 << 31]);
    entry["data_offsets"] = serde_json::json!([0, 1u64 << 62]);
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(&bytes[8 + header_len..]);
    out
}

/// A burnpack file whose metadata (CBOR) declares a number enormous: the `i`-th multi-byte
/// unsigned integer (a shape, an offset, a length) set to the largest value of its width.
fn enormous_burnpack(mut bytes: Vec<u8>, i: usize) -> Vec<u8> {
    let metadata_len = u32::from_le_bytes(bytes[6..10].try_into().unwrap()) as usize;
    let metadata = 10..10 + metadata_len;
    let heads: Vec<(usize, usize)> = metadata
        .clone()
        .filter_map(|at| match bytes[at] {
            0x19 => Some((at, 2)),
            0x1a => Some((at, 4)),
            0x1b => Some((at, 8)),
            _ => None,
        })
        .filter(|&(at, width)| at + width < metadata.end)
        .collect();
    if let Some(&(at, width)) = heads.get(i % heads.len().max(1)) {
        bytes[at + 1..at + 1 + width].fill(0xff);
    }
    bytes
}
