// The demo: classify a picked or drawn 28x28 image with kbnn's packed binary MLP on LiteRT.js.
//
// Served from web/ (python web/build.py --serve). index.html?selftest=1 classifies every
// bundled sample and writes {"predictions", "logits", "model"} as JSON into #kbnn-selftest;
// ?model=FILE.tflite picks another file from web/models/ (it must take float32
// [1, 28, 28, 1] pixels in [0, 1] and give 10 logits).
import {loadAndCompile, loadLiteRt, Tensor} from '@litertjs/core';

const params = new URLSearchParams(window.location.search);
const MODEL_FILE = params.get('model') || 'bnn_mlp_1024_packed_b1.tflite';
const LATENCY_RUNS = 7;  // the median of these is shown; the first run is not counted
const $ = (id) => document.getElementById(id);

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// Pixels as the Python side makes them: uint8 / 255 in float32.
function toInput(pixels) {
  const input = new Float32Array(784);
  for (let i = 0; i < 784; i++) input[i] = pixels[i] / 255;
  return input;
}

function decodeSample(sample) {
  return Uint8Array.from(atob(sample.pixels), (c) => c.charCodeAt(0));
}

class Classifier {
  constructor(model) {
    this.model = model;
    const [input] = model.getInputDetails();
    this.shape = Array.from(input.shape);
    if (this.shape[0] !== 1 || this.shape.slice(1).reduce((a, b) => a * b, 1) !== 784) {
      throw new Error(`${MODEL_FILE} takes input of shape [${this.shape}]; this page needs ` +
                      '[1, 28, 28, 1] (export with --batch 1)');
    }
  }

  async logits(input) {
    const tensor = new Tensor(input, this.shape);
    const outputs = await this.model.run(tensor);
    tensor.delete();
    const result = await outputs[0].moveTo('wasm');
    const logits = Array.from(result.toTypedArray());
    result.delete();
    for (const output of outputs) if (!output.deleted) output.delete();
    return logits;
  }

  // Logits, and the median latency of LATENCY_RUNS further runs in milliseconds.
  async timed(input) {
    const logits = await this.logits(input);
    const times = [];
    for (let i = 0; i < LATENCY_RUNS; i++) {
      const start = performance.now();
      await this.logits(input);
      times.push(performance.now() - start);
    }
    return {logits, ms: median(times)};
  }
}

class Canvas {
  constructor(element, onChange) {
    this.element = element;
    this.ctx = element.getContext('2d', {willReadFrequently: true});
    this.small = document.createElement('canvas');
    this.small.width = this.small.height = 28;
    this.smallCtx = this.small.getContext('2d', {willReadFrequently: true});
    this.onChange = onChange;
    this.clear();
    let drawing = false;
    const at = (event) => {
      const box = element.getBoundingClientRect();
      return [(event.clientX - box.left) * element.width / box.width,
              (event.clientY - box.top) * element.height / box.height];
    };
    element.addEventListener('pointerdown', (event) => {
      drawing = true;
      element.setPointerCapture(event.pointerId);
      this.stroke(...at(event), ...at(event));
      this.last = at(event);
    });
    element.addEventListener('pointermove', (event) => {
      if (!drawing) return;
      const point = at(event);
      this.stroke(...this.last, ...point);
      this.last = point;
      this.onChange(this.pixels());
    });
    element.addEventListener('pointerup', () => {
      drawing = false;
      this.onChange(this.pixels());
    });
  }

  clear() {
    this.ctx.fillStyle = 'black';
    this.ctx.fillRect(0, 0, this.element.width, this.element.height);
  }

  stroke(x0, y0, x1, y1) {
    this.ctx.strokeStyle = 'white';
    this.ctx.lineCap = this.ctx.lineJoin = 'round';
    this.ctx.lineWidth = 10 * Number($('brush').value);
    this.ctx.beginPath();
    this.ctx.moveTo(x0, y0);
    this.ctx.lineTo(x1, y1);
    this.ctx.stroke();
  }

  // Show a 28x28 uint8 image, each pixel as a 10x10 block.
  show(pixels) {
    const image = this.smallCtx.createImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      image.data.set([pixels[i], pixels[i], pixels[i], 255], 4 * i);
    }
    this.smallCtx.putImageData(image, 0, 0);
    this.ctx.imageSmoothingEnabled = false;
    this.ctx.drawImage(this.small, 0, 0, this.element.width, this.element.height);
  }

  // The drawing averaged down to 28x28 grey levels.
  pixels() {
    this.smallCtx.imageSmoothingEnabled = true;
    this.smallCtx.imageSmoothingQuality = 'high';
    this.smallCtx.drawImage(this.element, 0, 0, 28, 28);
    const rgba = this.smallCtx.getImageData(0, 0, 28, 28).data;
    const pixels = new Uint8Array(784);
    for (let i = 0; i < 784; i++) pixels[i] = rgba[4 * i];
    return pixels;
  }
}

function drawBars(classNames, logits, label) {
  const probabilities = softmax(logits);
  const best = logits.indexOf(Math.max(...logits));
  $('bars').replaceChildren(...classNames.map((name, c) => {
    const row = document.createElement('div');
    row.className = 'bar' + (c === best ? ' best' : '') + (c === label ? ' truth' : '');
    const percent = (100 * probabilities[c]).toFixed(1);
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill" ` +
        `style="width:${percent}%"></span></span><span class="value">${percent}%</span>`;
    row.querySelector('.name').textContent = name + (c === label ? ' (true)' : '');
    return row;
  }));
  $('predicted').textContent = classNames[best];
}

async function main() {
  $('model-name').textContent = MODEL_FILE;
  const [samplesFile, modelBytes] = await Promise.all([
    fetch('samples.json').then((r) => {
      if (!r.ok) throw new Error(`samples.json: HTTP ${r.status}`);
      return r.json();
    }),
    fetch(`models/${MODEL_FILE}`).then((r) => {
      if (!r.ok) {
        throw new Error(`models/${MODEL_FILE}: HTTP ${r.status}; build it with ` +
                        '`python web/build.py`');
      }
      return r.arrayBuffer();
    }),
  ]);
  $('model-size').textContent = `${modelBytes.byteLength.toLocaleString('en')} bytes`;
  await loadLiteRt('./node_modules/@litertjs/core/wasm/');
  const classifier = new Classifier(
      await loadAndCompile(new Uint8Array(modelBytes), {accelerator: 'wasm'}));
  const classNames = samplesFile.class_names;
  const samples = samplesFile.samples.map((s) => ({...s, bytes: decodeSample(s)}));

  let pending = Promise.resolve();
  const classify = (pixels, label) => {
    pending = pending.then(async () => {
      const {logits, ms} = await classifier.timed(toInput(pixels));
      // What was shown last, for tests and for the curious (the browser console).
      window.kbnnLast = {pixels: Array.from(pixels), logits};
      drawBars(classNames, logits, label);
      $('latency').textContent = `${ms.toFixed(3)} ms per image (median of ${LATENCY_RUNS} runs)`;
    }).catch(showError);
    return pending;
  };
  const canvas = new Canvas($('draw'), (pixels) => classify(pixels, -1));
  $('clear').addEventListener('click', () => {
    canvas.clear();
    classify(canvas.pixels(), -1);
  });
  $('samples').replaceChildren(...samples.map((sample) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'sample';
    button.title = `test image ${sample.index}: ${classNames[sample.label]}`;
    const thumb = document.createElement('canvas');
    thumb.width = thumb.height = 28;
    const image = thumb.getContext('2d').createImageData(28, 28);
    sample.bytes.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
    thumb.getContext('2d').putImageData(image, 0, 0);
    const caption = document.createElement('span');
    caption.textContent = classNames[sample.label];
    button.append(thumb, caption);
    button.addEventListener('click', () => {
      canvas.show(sample.bytes);
      classify(sample.bytes, sample.label);
    });
    return button;
  }));

  if (params.get('selftest') === '1') {
    const logits = [];
    for (const sample of samples) logits.push(await classifier.logits(toInput(sample.bytes)));
    const predictions = logits.map((l) => l.indexOf(Math.max(...l)));
    const shown = samples[0];
    canvas.show(shown.bytes);
    await classify(shown.bytes, shown.label);
    $('kbnn-selftest').textContent = JSON.stringify({predictions, logits, model: MODEL_FILE});
  } else {
    canvas.show(samples[0].bytes);
    await classify(samples[0].bytes, samples[0].label);
  }
  $('status').textContent = 'Ready.';
}

function showError(error) {
  console.error(error);
  $('status').textContent = `Error: ${error.message}`;
  $('status').classList.add('error');
  if (params.get('selftest') === '1') {
    $('kbnn-selftest').textContent = JSON.stringify({error: String(error.message || error)});
  }
}

main().catch(showError);
