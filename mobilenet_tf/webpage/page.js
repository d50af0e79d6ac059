// The page, built on window.mobilenet (mobilenet.js): pick, drop or photograph an image, see the
// top-5 classes and the time the model took here.
import "./mobilenet.js";

const $ = (id) => document.getElementById(id);

function show(message) {
  $("message").textContent = message;
}

async function classify(source, previewUrl) {
  show("");
  try {
    const top = await window.mobilenet.classify(source);
    $("preview").src = previewUrl;
    $("top").replaceChildren(...top.map(({label, score}) => {
      const item = document.createElement("li");
      item.innerHTML = `<span class="label"></span><meter min="0" max="1"></meter><span class="score"></span>`;
      item.querySelector(".label").textContent = label;
      item.querySelector("meter").value = score;
      item.querySelector(".score").textContent = score.toFixed(3);
      return item;
    }));
    const {preprocessMs, modelMs} = window.mobilenet.timing;
    $("timing").textContent = `model ${modelMs.toFixed(1)} ms, crop and resize ${preprocessMs.toFixed(1)} ms`;
    $("result").hidden = false;
  } catch (error) {
    show(error.message);
  }
}

function classifyFile(file) {
  if (file) classify(file, URL.createObjectURL(file));
}

$("file").addEventListener("change", (event) => classifyFile(event.target.files[0]));
$("drop").addEventListener("dragover", (event) => event.preventDefault());
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  classifyFile(event.dataTransfer.files[0]);
});

if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
  $("camera").hidden = false;
  $("camera").addEventListener("click", async () => {
    const video = $("video");
    try {
      if (!video.srcObject) {
        video.srcObject = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}});
        video.hidden = false;
        await video.play();
        $("camera").textContent = "Classify this frame";
        return;
      }
      const canvas = Object.assign(document.createElement("canvas"), {width: video.videoWidth, height: video.videoHeight});
      canvas.getContext("2d").drawImage(video, 0, 0);
      classify(canvas, canvas.toDataURL("image/jpeg"));
    } catch (error) {
      show(`camera: ${error.message}`);
    }
  });
}

window.mobilenet.ready.then(async () => {
  const info = await window.mobilenet.info;
  $("model").textContent = `${info.model}, ${info.image_size.join("x")}, ${info.web.tflite} (LiteRT.js ${info.web.runtime})`;
}, (error) => show(`the model did not load: ${error.message}`));
