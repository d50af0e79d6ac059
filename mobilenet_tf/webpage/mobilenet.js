// The classifier of this folder, in the visitor's browser: LiteRT.js (WebAssembly) runs
// model.tflite, written by `mobilenet-export --web` with the labels and model_info.json beside it.
//
//   await window.mobilenet.ready;                        // the model is loaded
//   const top = await window.mobilenet.classify(source); // [{label, score}, ...], best first
//
// `source`: an <img>, <canvas> or <video> element, an ImageBitmap, a Blob or File, or a URL
// (data: URLs included). The image is cropped and resized as the export's evaluation does
// (model_info.json's crop_fraction and transform), then the model (its normalization inside) runs
// on its 0-255 pixels. A source that is not an image rejects with an Error saying so.
import {loadAndCompile, loadLiteRt, Tensor} from "./litert/core/index.js";

const here = (path) => new URL(path, import.meta.url).href;
const MAX_PIXELS = 50e6; // as the SavedModel's serving signature refuses

async function load() {
  const info = await (await fetch(here("model_info.json"))).json();
  const text = await (await fetch(here("labels.txt"))).text();
  const labels = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
  await loadLiteRt(here("litert/core/wasm/"));
  const model = await loadAndCompile(here(info.web.model), {accelerator: "wasm"});
  const input = model.getInputDetails()[0];
  return {info, labels, model, dtype: input.dtype, height: input.shape[1], width: input.shape[2]};
}

const loaded = load();
let timing = null;

// Where each output pixel of timm's transform samples the image, per axis: {scale, offset}, output
// pixel i sampling the image at (i + offset + 0.5) * scale (pixel centres), as TensorFlow's
// antialiased resize (scale_and_translate) does.
function sampling(width, height, info, outHeight, outWidth) {
  const fraction = info.crop_fraction;
  // timm's (preprocess.timm_eval_pixels): the image resized so that its shorter side is
  // floor(size / fraction) (torchvision's Resize), then the central crop (its CenterCrop).
  let newHeight, newWidth;
  if (outHeight === outWidth) {
    const scale = Math.floor(outHeight / fraction);
    const long = Math.floor(scale * Math.max(width, height) / Math.min(width, height));
    [newHeight, newWidth] = height <= width ? [scale, long] : [long, scale];
  } else {
    [newHeight, newWidth] = [Math.floor(outHeight / fraction), Math.floor(outWidth / fraction)];
  }
  return {y: {scale: height / newHeight, offset: roundHalfEven((newHeight - outHeight) / 2)},
          x: {scale: width / newWidth, offset: roundHalfEven((newWidth - outWidth) / 2)}};
}

function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  return diff > 0.5 || (diff === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

// TensorFlow's resize kernels (tf.image.resize): the triangle (bilinear) and Keys' cubic, a = -0.5.
const KERNELS = {
  bilinear: {radius: 1, weight: (x) => Math.max(0, 1 - Math.abs(x))},
  bicubic: {radius: 2, weight: (x) => {
    x = Math.abs(x);
    return x <= 1 ? (1.5 * x - 2.5) * x * x + 1 : x < 2 ? ((-0.5 * x + 2.5) * x - 4) * x + 2 : 0;
  }},
};

// For each of `count` output pixels along an axis of `size` input pixels: the first input pixel it
// reads and the normalized weights, as TensorFlow's scale_and_translate computes its spans (the
// kernel widened by the scale when `antialias` and shrinking; taps outside the image dropped).
function spans(count, size, {scale, offset}, kernel, antialias) {
  const kernelScale = antialias ? Math.max(scale, 1) : 1;
  const reach = kernel.radius * kernelScale;
  return Array.from({length: count}, (_, i) => {
    const centre = (i + offset + 0.5) * scale;
    const first = Math.max(0, Math.ceil(centre - reach - 0.5));
    const last = Math.min(size - 1, Math.floor(centre + reach - 0.5));
    const weights = [];
    for (let j = first; j <= last; j++) weights.push(kernel.weight((j + 0.5 - centre) / kernelScale));
    const total = weights.reduce((a, b) => a + b, 0);
    return {first, weights: total > 0 ? weights.map((w) => w / total) : weights};
  });
}

// RGB float [outHeight * outWidth * 3] of RGBA pixels [height * width * 4], resampled separably.
function resample(rgba, width, height, outHeight, outWidth, geometry, method, antialias) {
  const kernel = KERNELS[method];
  const rows = spans(outHeight, height, geometry.y, kernel, antialias);
  const cols = spans(outWidth, width, geometry.x, kernel, antialias);
  const across = new Float32Array(height * outWidth * 3); // every input row, resampled along x
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < outWidth; x++) {
      const {first, weights} = cols[x];
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < weights.length; k++) {
        const at = (y * width + first + k) * 4;
        r += weights[k] * rgba[at];
        g += weights[k] * rgba[at + 1];
        b += weights[k] * rgba[at + 2];
      }
      const to = (y * outWidth + x) * 3;
      across[to] = r; across[to + 1] = g; across[to + 2] = b;
    }
  }
  const out = new Float32Array(outHeight * outWidth * 3);
  for (let y = 0; y < outHeight; y++) {
    const {first, weights} = rows[y];
    for (let x = 0; x < outWidth * 3; x++) {
      let value = 0;
      for (let k = 0; k < weights.length; k++) value += weights[k] * across[(first + k) * outWidth * 3 + x];
      out[y * outWidth * 3 + x] = value;
    }
  }
  return out;
}

async function bitmapOf(source) {
  try {
    if (typeof source === "string" || source instanceof URL) {
      const response = await fetch(source);
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      source = await response.blob();
    }
    return await createImageBitmap(source);
  } catch (error) {
    const what = typeof source === "string" ? source.slice(0, 60) : (source && source.type) || typeof source;
    throw new Error(`not an image (${what}): ${error.message || error}`);
  }
}

// TensorFlow's ResizeBilinear (half-pixel centres, no antialiasing), float32 step by step as its CPU
// kernel computes, of the `size` x `size` window at (top, left): the same pixels to the last bit,
// so that an int8 model's uint8 input rounds as TensorFlow's does.
function resizeBilinearTF(rgba, width, top, left, size, outHeight, outWidth) {
  const f = Math.fround;
  const weights = (count, scale) => Array.from({length: count}, (_, i) => {
    const at = f(f(f(i + 0.5) * scale) - 0.5);
    const floor = Math.floor(at);
    return {lower: Math.max(floor, 0), upper: Math.min(Math.ceil(at), size - 1), lerp: f(at - floor)};
  });
  const ys = weights(outHeight, f(size / outHeight)), xs = weights(outWidth, f(size / outWidth));
  const out = new Float32Array(outHeight * outWidth * 3);
  const pixel = (y, x, c) => rgba[((top + y) * width + left + x) * 4 + c];
  for (let i = 0; i < outHeight; i++) {
    const {lower: y0, upper: y1, lerp: dy} = ys[i];
    for (let j = 0; j < outWidth; j++) {
      const {lower: x0, upper: x1, lerp: dx} = xs[j];
      for (let c = 0; c < 3; c++) {
        const topLeft = pixel(y0, x0, c), topRight = pixel(y0, x1, c);
        const bottomLeft = pixel(y1, x0, c), bottomRight = pixel(y1, x1, c);
        const upper = f(topLeft + f(f(topRight - topLeft) * dx));
        const lower = f(bottomLeft + f(f(bottomRight - bottomLeft) * dx));
        out[(i * outWidth + j) * 3 + c] = f(upper + f(f(lower - upper) * dy));
      }
    }
  }
  return out;
}

// The model's input pixels of `bitmap`: the export's evaluation crop and resize (TensorFlow's
// kernels, computed here, not the canvas's own scaling), as uint8 or float32 RGB.
function pixelsOf(bitmap, m) {
  const {width, height} = bitmap;
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement("canvas"), {width, height});
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  const transform = m.info.transform || "crop_bilinear";
  const method = transform === "timm_bicubic" ? "bicubic" : "bilinear";
  let rgb;
  if (transform === "crop_bilinear") {
    const size = Math.max(1, Math.floor(m.info.crop_fraction * Math.min(width, height)));
    rgb = resizeBilinearTF(rgba, width, Math.floor((height - size + 1) / 2), Math.floor((width - size + 1) / 2), size,
                           m.height, m.width);
  } else {
    rgb = resample(rgba, width, height, m.height, m.width, sampling(width, height, m.info, m.height, m.width), method,
                   true);
  }
  if (m.dtype !== "uint8") {
    return method === "bicubic" ? rgb.map((v) => Math.min(255, Math.max(0, v))) : rgb;
  }
  // Half to even, as the Python runners quantize (numpy's round). A plain loop: Uint8Array.from with
  // a map function took 9 ms more at 224x224 (benchmarks/web_inference.py).
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) out[i] = Math.min(255, Math.max(0, roundHalfEven(rgb[i])));
  return out;
}

// The `topK` (default 5; all classes with Infinity) most probable classes of `source`.
export async function classify(source, topK = 5) {
  const m = await loaded;
  const bitmap = await bitmapOf(await source);
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    throw new Error(`image too large: ${bitmap.width}x${bitmap.height}, more than ${MAX_PIXELS / 1e6} megapixels`);
  }
  const started = performance.now();
  const pixels = pixelsOf(bitmap, m);
  bitmap.close();
  const ran = performance.now();
  const tensor = new Tensor(pixels, [1, m.height, m.width, 3]);
  let probabilities;
  try {
    const outputs = await m.model.run(tensor);
    probabilities = Float32Array.from(outputs[0].toTypedArray());
    outputs.forEach((output) => output.delete());
  } finally {
    tensor.delete();
  }
  timing = {preprocessMs: ran - started, modelMs: performance.now() - ran};
  return Array.from(probabilities, (score, i) => ({label: m.labels[i], score}))
      .sort((a, b) => b.score - a.score).slice(0, Math.min(topK, probabilities.length));
}

// The model's input of `source`, as classify() computes it: RGB pixels [height * width * 3], 0-255
// (uint8 for an int8 model, float32 otherwise).
export async function pixels(source) {
  const m = await loaded;
  const bitmap = await bitmapOf(await source);
  try {
    return pixelsOf(bitmap, m);
  } finally {
    bitmap.close();
  }
}

window.mobilenet = {
  ready: loaded.then(() => undefined),
  classify,
  pixels,
  // Milliseconds of the last classify(): cropping and resizing, and the model.
  get timing() { return timing; },
  get info() { return loaded.then((m) => m.info); },
};
