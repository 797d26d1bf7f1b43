#!/usr/bin/env bash
# make-federation.sh: generate a complete four-organisation Bluewire federation
# (root CA, one bundle per organisation, an operator and an analyst per
# organisation, and a node.toml per node that lists the other three as peers).
#
# Usage: make-federation.sh [--compose] [--base-port N] [--days N] OUTDIR
#
#   (default)     loopback: node i listens on 127.0.0.1:(N+i), N = 7441, so
#                 csirt-be 7441, csirt-fr 7442, cyclone-fr 7443, cert-eu 7444.
#   --compose     for deploy/container/compose.yaml: every node listens on
#                 0.0.0.0:7443 inside its container, peers are reached as
#                 https://<org>:7443 on the compose network, and the users'
#                 client.toml point at https://localhost:(N+i), the port
#                 published on the host.
#
# Needs the `bluewire` CLI on PATH, or its path in $BLUEWIRE.
#
# What lands in OUTDIR:
#   ca/                    federation root CA: ca.key never leaves the
#                          federation operator (crl.pem is the published list)
#   issued/<org>/          full `bluewire pki issue` output, including
#                          org-ca.key: stays with the org's PKI admin, not
#                          on the node
#   <org>/                 the node's config dir (/etc/bluewire in production):
#                          node.toml ca.crt node.crt node.key signing.key encryption.key crl.pem
#                          (loopback mode: also the store, in <org>/data/)
#   data/<org>/            compose mode only: the store, bind-mounted at
#                          /var/lib/bluewire
#   users/<org>/{operator,analyst}/   user.crt user.key ca.crt client.toml
#   compose.env            compose mode only: BLUEWIRE_FED, BLUEWIRE_UID/GID
#
# Not for production as is: a real federation generates each org's keys on
# that org's side of the wire (see deploy/README.md), and certificates here
# default to 30 days.
set -euo pipefail

die() { echo "make-federation.sh: $*" >&2; exit 2; }

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

mode=loopback
base_port=7441
days=30
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --compose) mode=compose; shift ;;
    --base-port) [[ $# -ge 2 ]] || die "--base-port needs a value"; base_port=$2; shift 2 ;;
    --days) [[ $# -ge 2 ]] || die "--days needs a value"; days=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [[ -z "$out" ]] || die "one OUTDIR only (got $out and $1)"; out=$1; shift ;;
  esac
done
[[ -n "$out" ]] || { usage >&2; exit 2; }
[[ "$base_port" =~ ^[0-9]+$ ]] && (( base_port >= 1 && base_port + 3 <= 65535 )) \
  || die "--base-port must be a port number (1..65532)"
[[ "$days" =~ ^[0-9]+$ ]] || die "--days must be a number"

BLUEWIRE=${BLUEWIRE:-bluewire}
command -v "$BLUEWIRE" >/dev/null 2>&1 \
  || die "cannot run '$BLUEWIRE': put bluewire on PATH or set BLUEWIRE=/path/to/bluewire"
bw() { "$BLUEWIRE" "$@"; }

if [[ -e "$out" ]] && [[ -n "$(ls -A "$out" 2>/dev/null)" ]]; then
  die "$out exists and is not empty; pick another OUTDIR or remove it"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
umask 077

# org  country  type  levels
orgs=(
  "csirt-be   BE  csirt    technical,operational"
  "csirt-fr   FR  csirt    technical"
  "cyclone-fr FR  liaison  operational"
  "cert-eu    EU  eu-body  technical,operational"
)

org_ids=()
for row in "${orgs[@]}"; do read -r o _ <<<"$row"; org_ids+=("$o"); done

# Where org number $1 (0-based) is reached by its peers, and where it listens.
endpoint_of() {
  local i=$1
  if [[ $mode == compose ]]; then echo "https://${org_ids[$i]}:7443"
  else echo "https://127.0.0.1:$((base_port + i))"; fi
}
listen_of() {
  local i=$1
  if [[ $mode == compose ]]; then echo "0.0.0.0:7443"
  else echo "127.0.0.1:$((base_port + i))"; fi
}

echo "== federation root CA in $out/ca"
bw pki init-federation --out "$out/ca" --name "Bluewire local federation root CA" >/dev/null

for i in "${!orgs[@]}"; do
  read -r org country type levels <<<"${orgs[$i]}"
  endpoint=$(endpoint_of "$i")
  echo "== $org ($country, $type, $levels) at $endpoint"

  bw pki issue --ca "$out/ca" --org "$org" --country "$country" --type "$type" \
    --levels "$levels" --endpoint "$endpoint" --days "$days" \
    --out "$out/issued/$org" >/dev/null

  # The node's config dir gets only what the node needs (no org-ca.key).
  nd="$out/$org"
  mkdir -p "$nd"
  for f in ca.crt node.crt node.key signing.key encryption.key; do
    cp -p "$out/issued/$org/$f" "$nd/$f"
  done
  cp "$out/ca/crl.pem" "$nd/crl.pem"
  chmod 0644 "$nd/ca.crt" "$nd/node.crt" "$nd/crl.pem"

  peer_args=()
  for j in "${!org_ids[@]}"; do
    [[ $j == "$i" ]] && continue
    peer_args+=(--peer "${org_ids[$j]}=$(endpoint_of "$j")")
  done
  bw node init --org "$org" --listen "$(listen_of "$i")" "${peer_args[@]}" \
    --out "$nd/node.toml" >/dev/null

  # Turn on the revocation list; in compose mode the store is the volume.
  sed -i 's|^# crl = "crl.pem"$|crl = "crl.pem"|' "$nd/node.toml"
  grep -q '^crl = "crl.pem"$' "$nd/node.toml" \
    || die "$nd/node.toml: could not enable crl (did the node.toml template change?)"
  if [[ $mode == compose ]]; then
    sed -i 's|^data_dir = "data"$|data_dir = "/var/lib/bluewire"|' "$nd/node.toml"
    grep -q '^data_dir = "/var/lib/bluewire"$' "$nd/node.toml" \
      || die "$nd/node.toml: could not set data_dir (did the node.toml template change?)"
    mkdir -p "$out/data/$org"
  fi
  chmod 0644 "$nd/node.toml"

  for role in operator analyst; do
    ud="$out/users/$org/$role"
    bw pki issue-user --org-dir "$out/issued/$org" --name "$role" --role "$role" \
      --days "$days" --out "$ud" >/dev/null
    if [[ $mode == compose ]]; then
      # From the host, a node is reached on its published port; its
      # certificate also names "localhost", so TLS verification passes.
      sed -i "s|^node = \".*\"$|node = \"https://localhost:$((base_port + i))\"|" "$ud/client.toml"
    fi
  done
done

if [[ $mode == compose ]]; then
  cat >"$out/compose.env" <<EOF
# Generated by make-federation.sh. Use with:
#   docker compose --env-file $out/compose.env -f deploy/container/compose.yaml up --build
BLUEWIRE_FED=$out
BLUEWIRE_UID=$(id -u)
BLUEWIRE_GID=$(id -g)
EOF
  chmod 0644 "$out/compose.env"
fi

echo
echo "Done ($mode mode). Federation CA: $out/ca  (list with: bluewire pki list --ca $out/ca)"
if [[ $mode == compose ]]; then
  cat <<EOF
Start the four nodes (from the repository root):
  docker compose --env-file $out/compose.env -f deploy/container/compose.yaml up --build -d
Then, from the host:
  bluewire --client-config $out/users/csirt-be/operator/client.toml status
EOF
else
  cat <<EOF
Start the four nodes, one terminal (or background job) each:
EOF
  for o in "${org_ids[@]}"; do
    echo "  bluewire-node run --config $out/$o/node.toml"
  done
  cat <<EOF
Then:
  bluewire --client-config $out/users/csirt-be/operator/client.toml status
  bluewire --client-config $out/users/csirt-fr/analyst/client.toml subscribe
EOF
fi
