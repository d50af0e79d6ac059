# The project on TensorFlow's official GPU image of the pinned version, installed exactly as README.md
# installs it. The image the Kubernetes manifests (scripts/kubernetes/) and a SLURM container launch
# (MOBILENET_TF_IMAGE, pyxis/enroot) run:
#   docker build -t mobilenet-tf:0.1.0 .
FROM tensorflow/tensorflow:2.21.0-gpu
WORKDIR /opt/mobilenet_tf
COPY . .
RUN python3 -m pip install -r requirements.txt -e .
CMD ["mobilenet-train", "--helpshort"]
