// Runs a tfjs graph model in Node.js on one backend (wasm or cpu), as the engine's tf_js
// verification.
//
//   node tfjs_predict.js MODEL_DIR INPUTS.bin N H W OUT.bin [BACKEND]
//
// INPUTS.bin holds N float32 images [H, W, 3] (already in the model's input range); OUT.bin
// receives N rows of float32 scores. The model is loaded with tf.io.fromMemory from the files
// (loadGraphModel('file://...') needs tfjs-node, which cannot be installed offline). Prints one
// line of JSON: the backend, the output width, the mean milliseconds per image after 3
// warm-up runs and the model's user-defined metadata as tfjs reads it (GraphModel.metadata).
// When the backend cannot run the model (an op or a shape it does not support),
// the last line is JSON {"refused": MESSAGE, "stage": "load" | "predict"} and the exit status 3.
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');

function modelFromFolder(folder) {
  const manifest = JSON.parse(fs.readFileSync(path.join(folder, 'model.json'), 'utf8'));
  const weightSpecs = [];
  const buffers = [];
  for (const group of manifest.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(folder, shard)));
  }
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  return tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: manifest.modelTopology,
    weightSpecs,
    weightData,
    format: manifest.format,
    generatedBy: manifest.generatedBy,
    convertedBy: manifest.convertedBy,
    signature: manifest.signature,
    userDefinedMetadata: manifest.userDefinedMetadata,
  }));
}

async function main() {
  const [folder, inputsFile, n, h, w, outFile, backend = 'wasm'] = process.argv.slice(2);
  const [count, height, width] = [Number(n), Number(h), Number(w)];
  const wasmDir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '/');
  wasm.setWasmPaths(wasmDir);
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start`);
  await tf.ready();
  let stage = 'load';
  const refused = (error) => {
    console.log(JSON.stringify({ refused: String(error && error.message ? error.message : error), stage }));
    process.exit(3);
  };
  const model = await modelFromFolder(folder).catch(refused);
  stage = 'predict';
  const raw = fs.readFileSync(inputsFile);
  const inputs = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const pixels = height * width * 3;
  const rows = [];
  let width_out = 0;
  for (let i = 0; i < Math.min(count, 3); i++) {  // warm-up: the first runs compile kernels
    const image = tf.tensor4d(inputs.subarray(0, pixels), [1, height, width, 3]);
    let output;
    try {
      output = model.predict(image);
      await output.data();
    } catch (error) {
      refused(error);
    }
    tf.dispose([image, output]);
  }
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const image = tf.tensor4d(inputs.subarray(i * pixels, (i + 1) * pixels), [1, height, width, 3]);
    const output = model.predict(image);
    const scores = await output.data();
    width_out = scores.length;
    rows.push(Float32Array.from(scores));
    tf.dispose([image, output]);
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
  const out = new Float32Array(count * width_out);
  rows.forEach((row, i) => out.set(row, i * width_out));
  fs.writeFileSync(outFile, Buffer.from(out.buffer));
  console.log(JSON.stringify({
    backend: tf.getBackend(),
    classes: width_out,
    msPerImage: elapsed / Math.max(count, 1),
    metadata: model.metadata || null,  // model.json's userDefinedMetadata, as tfjs hands it to users
  }));
}

main().catch((error) => {
  console.error(`tfjs_predict: ${error && error.message ? error.message : error}`);
  process.exit(1);
});
