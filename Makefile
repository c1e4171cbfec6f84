# Container images (see scripts/build-images.sh --help for every option).
#   make images                       build sandbox, proxy and jupyter with podman or docker
#   make images-k3s                   ... and import them into k3s's containerd
#   make images IMAGES="sandbox" BUILD_IMAGES_FLAGS="--engine docker"
IMAGES ?=
BUILD_IMAGES_FLAGS ?=

.PHONY: images images-k3s

images:
	scripts/build-images.sh $(BUILD_IMAGES_FLAGS) $(IMAGES)

images-k3s:
	scripts/build-images.sh --import-k3s $(BUILD_IMAGES_FLAGS) $(IMAGES)
