#!/usr/bin/env bash
# Installs the real components twokey's tests and demo run against, and links
# them into .tools/bin (git-ignored):
#
#   terraform, tofu, vault  built from the Go module proxy through the pinned
#   helm                    wrapper modules in tools/<name>/ (go.mod + go.sum);
#                           helm checks and renders deploy/helm/twokey
#   redis-server            Debian's package, installed when missing
#   bwrap                   Debian's bubblewrap: every terraform run is sandboxed
#   chromium, chromedriver  Debian's packages (and an emoji font), for the demo
#                           page's browser test
#
# Built binaries are cached by name, version and wrapper go.sum digest in
# $TWOKEY_TOOLS_CACHE (default ~/.cache/twokey-tools), so a fresh clone on a
# machine that built them once does not build them again. Idempotent; a cached
# run takes well under a second.
#
# With arguments, installs only those tools: scripts/tools.sh terraform vault
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/.tools/bin"
cache="${TWOKEY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/twokey-tools}"
mkdir -p "$bin" "$cache"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf 'tools: %s\n' "$*" >&2; }

# module_version DIR MODULE prints the version DIR/go.mod requires of MODULE.
module_version() {
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { sub(/^v/, "", $2); print $2; exit }' "$1/go.mod"
}

# build NAME MODULE PACKAGE LDFLAGS builds PACKAGE from tools/NAME into the
# cache unless that exact version is already there, then links it as
# .tools/bin/NAME.
build() {
	local name=$1 module=$2 pkg=$3 ldflags=$4
	local dir="$root/tools/$name"
	local version digest out
	version=$(module_version "$dir" "$module")
	[ -n "$version" ] || { log "tools/$name/go.mod does not require $module"; exit 1; }
	digest=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-12)
	out="$cache/$name-$version-$digest"
	if [ ! -x "$out" ]; then
		log "building $name $version (once per version; cached in $cache)"
		local start=$SECONDS
		(cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
		mv -f "$out.tmp.$$" "$out"
		log "built $name $version in $((SECONDS - start))s"
	fi
	link "$out" "$bin/$name"
}

# link SRC DST puts SRC at DST: a hard link where it can be, so that a
# sandboxed run, which drops to another uid when twokey runs as root, can
# reach the tool without passing through the cache's home directory; a
# symbolic link otherwise.
link() {
	[ "$1" -ef "$2" ] && [ ! -L "$2" ] && return
	ln -f "$1" "$2.tmp.$$" 2>/dev/null || ln -sfn "$1" "$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
}

# apt_install PACKAGE... installs Debian packages (as root, or through sudo).
apt_install() {
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing Debian packages: $*"
	local out="$cache/apt.log"
	if ! { $sudo apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; } >"$out" 2>&1; then
		cat "$out" >&2
		log "apt-get failed"
		exit 1
	fi
}

# One installer at a time per cache: concurrent runs wait instead of building twice.
exec 9>"$cache/.lock"
flock 9

# Which tools: the arguments, or all of them.
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(terraform tofu vault helm redis-server bwrap chromium)
wants() { [[ " ${want[*]} " == *" $1 "* ]]; }

wants terraform && build terraform github.com/hashicorp/terraform github.com/hashicorp/terraform \
	"-s -w -X github.com/hashicorp/terraform/version.dev=no"
wants tofu && build tofu github.com/opentofu/opentofu github.com/opentofu/opentofu/cmd/tofu \
	"-s -w -X github.com/opentofu/opentofu/version.dev=no"
wants vault && build vault github.com/hashicorp/vault github.com/hashicorp/vault "-s -w"
wants helm && build helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm \
	"-s -w -X helm.sh/helm/v3/internal/version.version=v$(module_version "$root/tools/helm" helm.sh/helm/v3)"

missing=()
if wants redis-server; then
	command -v redis-server >/dev/null || missing+=(redis-server)
fi
if wants bwrap; then
	command -v bwrap >/dev/null || missing+=(bubblewrap)
fi
if wants chromium; then
	command -v chromium >/dev/null || missing+=(chromium)
	command -v chromedriver >/dev/null || missing+=(chromium-driver)
	# Emoji in the demo page's screenshot.
	[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
fi
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
if wants redis-server; then ln -sfn "$(command -v redis-server)" "$bin/redis-server"; fi
if wants bwrap; then ln -sfn "$(command -v bwrap)" "$bin/bwrap"; fi
if wants chromium; then ln -sfn "$(command -v chromium)" "$bin/chromium"; fi

log "ready in $bin: $(cd "$bin" && ls | tr '\n' ' ')"
