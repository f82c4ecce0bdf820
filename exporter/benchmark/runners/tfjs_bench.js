// Times a tfjs graph model on the wasm backend, in Node.js or in a browser page; the same code
// for both, so the two rows differ only by where they run.
//
//   node tfjs_bench.js MODEL_DIR DATA_DIR MIN_COUNT MIN_SECONDS WARMUP
//
// DATA_DIR holds inputs.f32 and meta.json (see tflite_runner.py). Prints one line of JSON with the
// phases timed apart (load and initialization, first inference, warm-up, steady state until both
// a minimum count and a minimum duration), top-1 accuracy and agreement with the source.
'use strict';

function percentile(sorted, fraction) {
  const rank = Math.max(0, Math.min(sorted.length - 1, Math.round(fraction * sorted.length + 0.5) - 1));
  return sorted[rank];
}

// tf: the tfjs namespace; loadModel: () => Promise<GraphModel>; inputs: Float32Array of
// meta.shape; now: () => milliseconds.
async function benchmarkGraphModel(tf, loadModel, inputs, meta, minCount, minSeconds, warmup, now) {
  const [count, height, width] = meta.shape;
  const pixels = height * width * 3;
  let started = now();
  await tf.setBackend('wasm');
  await tf.ready();
  const model = await loadModel();
  const loadInitMs = now() - started;
  const images = [];
  for (let i = 0; i < count; i++) images.push(tf.tensor4d(inputs.subarray(i * pixels, (i + 1) * pixels), [1, height, width, 3]));
  const invoke = async (index) => {
    const output = model.predict(images[index % count]);
    const scores = await output.data();
    output.dispose();
    return scores;
  };
  const timed = async (index) => {
    const began = now();
    await invoke(index);
    return now() - began;
  };
  const firstInferenceMs = await timed(0);
  const warm = [];
  for (let i = 0; i < warmup; i++) warm.push(await timed(i));
  const steady = [];
  started = now();
  while (steady.length < minCount || now() - started < minSeconds * 1000) steady.push(await timed(steady.length));
  const steadySeconds = (now() - started) / 1000;
  const top1 = [];
  for (let i = 0; i < count; i++) {
    const scores = await invoke(i);
    let best = 0;
    for (let c = 1; c < scores.length; c++) if (scores[c] > scores[best]) best = c;
    top1.push(best);
  }
  images.forEach((image) => image.dispose());
  const labelled = top1.map((t, i) => [t, meta.labels[i]]).filter(([, y]) => y >= 0);
  const ordered = [...steady].sort((a, b) => a - b);
  return {
    runtime: 'tfjs-wasm',
    runtimeVersion: tf.version.tfjs,
    backend: tf.getBackend(),
    loadInitMs,
    firstInferenceMs,
    warmupMs: warm.length ? warm.reduce((a, b) => a + b, 0) / warm.length : null,
    warmupRuns: warm.length,
    steadyRuns: steady.length,
    steadySeconds,
    p50Ms: percentile(ordered, 0.5),
    p90Ms: percentile(ordered, 0.9),
    p99Ms: percentile(ordered, 0.99),
    imagesPerSecond: steady.length / steadySeconds,
    images: count,
    accuracy: labelled.length ? labelled.filter(([t, y]) => t === y).length / labelled.length : null,
    agreement: top1.filter((t, i) => t === meta.source_top1[i]).length / count,
  };
}

if (typeof module !== 'undefined' && require.main === module) {
  const fs = require('fs');
  const path = require('path');
  const tf = require('@tensorflow/tfjs');
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  const [modelDir, dataDir, minCount, minSeconds, warmup] = process.argv.slice(2);
  const loadModel = () => {
    // tf.io.fromMemory: loadGraphModel('file://...') needs tfjs-node, which is not installed.
    const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
    const weightSpecs = [];
    const buffers = [];
    for (const group of manifest.weightsManifest) {
      weightSpecs.push(...group.weights);
      for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(modelDir, shard)));
    }
    const joined = Buffer.concat(buffers);
    const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
    return tf.loadGraphModel(tf.io.fromMemory({ modelTopology: manifest.modelTopology, weightSpecs, weightData, format: manifest.format }));
  };
  wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '/'));
  const meta = JSON.parse(fs.readFileSync(path.join(dataDir, 'meta.json'), 'utf8'));
  const raw = fs.readFileSync(path.join(dataDir, 'inputs.f32'));
  const inputs = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  benchmarkGraphModel(tf, loadModel, inputs, meta, Number(minCount), Number(minSeconds), Number(warmup), now)
    .then((result) => {
      // VmHWM, not resourceUsage().maxRSS: Linux carries that across execve from the parent.
      const hwm = /VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
      result.peakMemoryBytes = hwm ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
      result.node = process.version;
      console.log(JSON.stringify(result));
    })
    .catch((error) => {
      console.error(`tfjs_bench: ${error && error.message ? error.message : error}`);
      process.exit(1);
    });
} else if (typeof window !== 'undefined') {
  window.benchmarkGraphModel = benchmarkGraphModel;
}
