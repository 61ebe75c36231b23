# Container images (included by the top-level Makefile via `-include mk/*.mk`).
#   make images           build every image with buildah (base image from Debian packages first),
#                         export docker-archives + <name>.json to $(PRECIS_CACHE)/images/, then
#                         smoke-test them with podman (SMOKE=0 skips the smoke tests)
#   make images IMAGES="service kafka"   a subset
#   make images-smoke     only the podman smoke tests of the built images
#   make images-base      only the Debian bookworm base image
# Needs (Debian): apt-get install -y buildah podman mmdebstrap; and `make install` (the venv).
# Heavy steps run under `nice`; unchanged images are skipped (inputs hash), see scripts/images/.
IMAGES ?= service triton-cpu kafka postgres smtp-sink redis
SMOKE ?= 1

.PHONY: images images-smoke images-base

images:
	@scripts/images/build.sh $(IMAGES)
	@if [ "$(SMOKE)" != "0" ]; then scripts/images/smoke.sh $(IMAGES); fi

images-smoke:
	@scripts/images/smoke.sh $(IMAGES)

images-base:
	@scripts/images/base.sh

# Free the buildah/podman store (vfs keeps every layer in full): removes dangling images and the
# --layers build cache; the next `make images` rebuilds the layers (archives are kept).
.PHONY: images-prune
images-prune:
	buildah --storage-driver vfs rmi --prune
