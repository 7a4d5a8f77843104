//! Loading a pipeline file as it arrives (`weights::stream`, `PipelineStream`): chunk by chunk,
//! in any chunk size, the pipeline is the one `load_file` makes from the whole file; a file cut
//! short, with bytes past its end, with a tensor over the device's buffer limit or with its
//! scales before their tensor is handled as it should be.

mod common;

use burn::tensor::Device;
use wasm_diffusion::pipelines::pipeline_file::{
    convert_pipeline_dir, PipelineQuant, PipelineStream, StreamedPipeline,
};
use wasm_diffusion::pipelines::stable_diffusion::{StableDiffusion, TextToImage};
use wasm_diffusion::weights::stream::StreamReader;
use wasm_diffusion::weights::Quant;

fn pipeline_bytes(quant: Quant) -> Vec<u8> {
    let dir = common::fixtures().join("pipelines").join("sd_tiny");
    convert_pipeline_dir(&dir, PipelineQuant::uniform(quant), &Default::default())
        .unwrap()
        .0
}

fn image_of(pipe: &StableDiffusion) -> Vec<f32> {
    let opts = TextToImage {
        prompt: "a red apple".into(),
        steps: 2,
        seed: 3,
        ..TextToImage::default()
    };
    let mut run = pipe.start(&opts).unwrap();
    while !run.is_done() {
        run.step().unwrap();
    }
    common::to_vec(run.decode())
}

/// Streams `bytes` in chunks of `chunk` bytes (uploading in parts of `part` values).
fn stream(bytes: &[u8], chunk: usize, part: usize) -> wasm_diffusion::Result<StreamedPipeline> {
    let mut reader = StreamReader::new();
    let mut sink =
        PipelineStream::new(&Device::flex(), u64::MAX, "no limit").with_chunk_values(part);
    for c in bytes.chunks(chunk) {
        reader.push(c, &mut sink)?;
    }
    reader.finish()?;
    sink.finish()
}

#[test]
fn streamed_pipelines_equal_the_whole_file_in_any_chunking() {
    for quant in [Quant::F32, Quant::F16, Quant::Int8, Quant::Int4] {
        let bytes = pipeline_bytes(quant);
        let want = image_of(&StableDiffusion::load_file(&bytes, &Device::flex()).unwrap());
        // Chunks inside the length field, inside the header, inside tensors and across many;
        // upload parts of one row and of several.
        for (chunk, part) in [
            (bytes.len(), usize::MAX),
            (4093, 1),
            (65_536, 1000),
            (3, 64),
        ] {
            let got = stream(&bytes, chunk, part).unwrap();
            assert_eq!(
                image_of(&got.pipeline),
                want,
                "{quant:?}: chunks of {chunk} bytes, parts of {part} values"
            );
            assert_eq!(got.quants, PipelineQuant::uniform(quant));
            assert_eq!(got.pipeline_tag, "StableDiffusionPipeline");
        }
    }
}

/// `bytes` rewritten with its tensors' data in reverse name order (the writer puts each
/// weight's scales right after it; reversed, they come first).
fn reversed(bytes: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut entries: Vec<(String, usize, usize)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            (
                k.clone(),
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.1));
    let mut out_data = Vec::new();
    for (name, b, e) in &entries {
        let begin = out_data.len();
        out_data.extend_from_slice(&data[*b..*e]);
        header[name]["data_offsets"] = serde_json::json!([begin, out_data.len()]);
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&out_data);
    out
}

#[test]
fn scales_before_or_after_their_tensors_load() {
    for quant in [Quant::Int8, Quant::Int4] {
        let bytes = pipeline_bytes(quant);
        let want = image_of(&StableDiffusion::load_file(&bytes, &Device::flex()).unwrap());
        let rev = reversed(&bytes);
        assert_ne!(rev, bytes);
        let got = stream(&rev, 10_000, 1 << 20).unwrap();
        assert_eq!(image_of(&got.pipeline), want, "{quant:?}");
    }
}

#[test]
fn a_stream_cut_short_or_running_on_is_refused() {
    let bytes = pipeline_bytes(Quant::Int8);
    // Cut inside the header, then inside the data.
    for cut in [5, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = stream(&bytes[..cut], 1 << 16, 1 << 20)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("truncated") && e.contains(&format!("found {cut}"))
                || cut < 8 + 100 && e.contains("header"),
            "cut at {cut}: {e}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing");
    let e = stream(&longer, 1 << 16, 1 << 20)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "expected the file to end after {} bytes",
            bytes.len()
        )),
        "{e}"
    );
}

#[test]
fn a_tensor_over_the_buffer_limit_is_refused_at_the_header() {
    let bytes = pipeline_bytes(Quant::Int8);
    let mut reader = StreamReader::new();
    let mut sink = PipelineStream::new(&Device::flex(), 4096, "the test's buffer limit");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // The header alone is enough to refuse: no tensor data is pushed.
    let e = reader
        .push(&bytes[..8 + n], &mut sink)
        .expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("expected at most 4 KiB per buffer (the test's buffer limit)")
            && msg.contains("tensor `"),
        "{msg}"
    );
    assert_eq!(e.kind, wasm_diffusion::error::ErrorKind::MemoryLimit);
}

#[test]
fn a_bad_header_is_refused_before_any_data() {
    let bytes = pipeline_bytes(Quant::F16);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // A pipeline header whose U-Net tensor has the wrong shape.
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("unet.") && k.ends_with("conv_in.weight"))
        .unwrap()
        .clone();
    let mut bad = header[&name]["shape"].as_array().unwrap().clone();
    let (a, b) = (bad[0].as_u64().unwrap(), bad[1].as_u64().unwrap());
    bad[0] = b.into();
    bad[1] = a.into();
    header[&name]["shape"] = serde_json::Value::Array(bad);
    let h = serde_json::to_vec(&header).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    let mut reader = StreamReader::new();
    let mut sink = PipelineStream::new(&Device::flex(), u64::MAX, "no limit");
    let e = reader
        .push(&file, &mut sink)
        .expect_err("refused")
        .to_string();
    assert!(e.contains(&name) && e.contains("expected shape"), "{e}");
}
