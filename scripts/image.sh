#!/usr/bin/env bash
# Builds twokey's container image from deploy/Dockerfile, for real, and checks
# it: `twokey version`, `terraform version` (or tofu) and `twokey
# check-config` (config, keys and a started sandbox) run inside the image.
# Not part of scripts/test.sh (the test that runs this is TestImage in
# deploy/image, behind TWOKEY_IMAGE_TEST=1).
#
# No registry is reachable from these machines, so the base image is made
# from Debian's packages with mmdebstrap and imported as
# localhost/debian:bookworm-slim; the Dockerfile itself is unchanged and
# names it through its BASE build argument. Builds and runs use buildah's
# chroot isolation (podman's default OCI runtime cannot set rlimits here).
#
#   scripts/image.sh                 # terraform
#   TERRAFORM=tofu scripts/image.sh  # OpenTofu
#   IMAGE=localhost/twokey:dev       # the tag (default)
#   REV=HEAD scripts/image.sh        # twokey from a commit, not the work tree
#
# Needs root (or rootless buildah set up) and the Debian packages mmdebstrap,
# buildah, podman (installed when missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

TERRAFORM=${TERRAFORM:-terraform}
IMAGE=${IMAGE:-localhost/twokey:dev}
BASE=localhost/debian:bookworm-slim
cache="${TWOKEY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/twokey-tools}/image"
mkdir -p "$cache"
log() { printf 'image: %s\n' "$*" >&2; }
start=$SECONDS

missing=()
for p in mmdebstrap buildah podman; do command -v $p >/dev/null || missing+=($p); done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The binaries: twokey from this tree, terraform/tofu from the pinned wrapper module.
bash scripts/tools.sh "$TERRAFORM"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
src=.
if [ -n "${REV:-}" ]; then
	src="$ctx/src"
	mkdir -p "$src"
	git archive "$REV" | tar -x -C "$src"
	version=$(git describe --always "$REV")
else
	version=$(git describe --always --dirty 2>/dev/null || echo dev)
fi
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/bin/twokey" ./cmd/twokey)
cp -L ".tools/bin/$TERRAFORM" "$ctx/bin/$TERRAFORM"
log "binaries ready after $((SECONDS - start))s"

# The base: Debian bookworm minbase (what debian:bookworm-slim is), made once.
if ! podman image exists "$BASE"; then
	if [ ! -s "$cache/bookworm-slim.tar" ]; then
		log "making the base with mmdebstrap (about 90 s, once)"
		# Like the official slim image: no documentation or translations, also
		# for packages the Dockerfile installs later (the options stay in
		# /etc/dpkg/dpkg.cfg.d).
		mmdebstrap --quiet --variant=minbase \
			--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
			--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
			--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
			--aptopt='Acquire::Languages "none"' \
			--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
			bookworm "$cache/bookworm-slim.tmp.tar" http://deb.debian.org/debian
		mv "$cache/bookworm-slim.tmp.tar" "$cache/bookworm-slim.tar"
	fi
	podman import --quiet "$cache/bookworm-slim.tar" "$BASE" >/dev/null
fi

t=$SECONDS
buildah bud --quiet --isolation chroot --layers=false \
	--build-arg BASE="$BASE" --build-arg TERRAFORM="$TERRAFORM" \
	-t "$IMAGE" -f deploy/Dockerfile "$ctx" >/dev/null
log "built $IMAGE in $((SECONDS - t))s; size $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"

# Check it: a config, keys and secrets as the Helm chart delivers them (files
# under /etc/twokey, secrets as NAME_FILE), and the image's own user.
etc="$ctx/etc"
mkdir -p "$etc/keys" "$etc/secrets"
"$ctx/bin/twokey" keygen "$etc/keys/serve" >/dev/null
for s in slack-bot-token slack-app-token vault-token; do echo "dummy-$s" >"$etc/secrets/$s"; done
head -c 32 /dev/urandom | base64 >"$etc/secrets/plan-key"
cat >"$etc/twokey.yaml" <<YAML
slack: {team_id: T0123ABCD}
redis: {url: "redis://twokey-serve@redis:6379/0"}
vault: {address: "https://vault:8200"}
terraform: {path: $TERRAFORM, version: "$("$ctx/bin/$TERRAFORM" version -json | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p')"}
signing: {key_file: /etc/twokey/keys/serve.key, serve_keys: [/etc/twokey/keys/serve.pub]}
projects:
  - name: infra
    repo: acme/infra
    environments:
      - name: staging
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: twokey-staging-apply}}
YAML
chmod -R a+rX "$etc"

ctr=$(buildah from --quiet "$IMAGE")
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$ctx"' EXIT
secrets=(SLACK_BOT_TOKEN_FILE /etc/twokey/secrets/slack-bot-token SLACK_APP_TOKEN_FILE /etc/twokey/secrets/slack-app-token
	VAULT_TOKEN_FILE /etc/twokey/secrets/vault-token TWOKEY_PLAN_KEY_FILE /etc/twokey/secrets/plan-key)
# buildah's own runtime (chroot isolation): the image's user, its binaries.
run() { buildah run --isolation chroot "$ctr" -- "$@"; }
run id
run twokey version
run env TF_CLI_CONFIG_FILE=/dev/null "$TERRAFORM" version
run bwrap --version
run tini --version
echo "entrypoint: $(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")"
# A process in a chroot may not create user namespaces, so the sandbox cannot
# start under buildah's chroot isolation. check-config runs the image the way
# a pod does instead: bubblewrap as the runtime, the image's root filesystem
# read-only, tmpfs on /tmp and /var/lib/twokey, the image's user (uid 10001),
# config, keys and secrets as read-only files under /etc/twokey.
# proc=unmasked gives it a /proc with nothing mounted over parts of it, as
# a pod with procMount: Unmasked has; proc=masked a /proc with read-only
# overmounts, as a pod's default /proc has.
mnt=$(buildah mount "$ctr")
runbox() {
	local proc=(--bind /proc /proc)
	[ "$1" = masked ] && proc=(--unshare-pid --proc /proc)
	shift
	local env=(--setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /var/lib/twokey)
	for ((i = 0; i < ${#secrets[@]}; i += 2)); do env+=(--setenv "${secrets[i]}" "${secrets[i + 1]}"); done
	bwrap --ro-bind "$mnt" / --ro-bind "$etc" /etc/twokey "${proc[@]}" --dev /dev --tmpfs /tmp --tmpfs /var/lib/twokey \
		--unshare-user --unshare-ipc --unshare-uts --share-net --die-with-parent --uid 10001 --gid 10001 \
		--clearenv "${env[@]}" --chdir /var/lib/twokey -- "$@"
}
runbox unmasked sh -c 'if touch /usr/local/bin/x 2>/dev/null; then echo "root filesystem is writable"; exit 1; fi; echo "root filesystem: read-only"'
runbox unmasked twokey check-config --config /etc/twokey/twokey.yaml
if out=$(runbox masked twokey check-config --config /etc/twokey/twokey.yaml 2>&1); then
	echo "check-config passed with a masked /proc; expected it to refuse"; exit 1
fi
echo "with a masked /proc (a pod's default procMount): ${out##*bwrap: }"
# The production binary has no demo (it is built without the tag demo).
out=$(runbox unmasked timeout 20 twokey demo 2>&1 || true)
grep -q "built without the demo" <<<"$out" || { echo "the image's twokey has the demo: $out"; exit 1; }
echo "twokey demo: not in this build"
log "done in $((SECONDS - start))s"
