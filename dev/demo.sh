#!/usr/bin/env bash
# The demo, from a clean checkout: start PostgreSQL (dev/pg.sh), load the Tate
# collection, start `quarry serve`, ask real questions over gRPC with
# `quarry ask` (streamed events, SQL, row previews, answers), then stop the
# server (and the database, if this script started it).
#
# Without a model configured, Quarry answers in router mode from the golden
# question/SQL pairs in demo/golden/tate.json and says plainly when it cannot
# answer. To run the demo against a real model, export for example
#   QUARRY__MODEL__BASE_URL=http://localhost:11434/v1 QUARRY__MODEL__MODEL=qwen2.5:7b-instruct
# (see README "Pointing Quarry at a model").
#
# Usage: dev/demo.sh [question ...]   (default: a handful of questions)
# Data:  QUARRY_TATE_DIR (default ../shared/data/tate beside the checkout)
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

section() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

TATE_DIR=${QUARRY_TATE_DIR:-$ROOT/../shared/data/tate}
[[ -f "$TATE_DIR/artworks.jsonl.gz" ]] || {
  echo "demo: no Tate data at $TATE_DIR (set QUARRY_TATE_DIR)" >&2
  exit 1
}

section "PostgreSQL 16 + pgvector (dev/pg.sh)"
was_running=0
if dev/pg.sh status >/dev/null 2>&1; then was_running=1; fi
url=$(dev/pg.sh start | tail -n 1)
echo "$url"

server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if ((was_running == 0)); then dev/pg.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

section "Embedding model (dev/model.sh): all-MiniLM-L6-v2 for linking and search"
QUARRY_MODEL_DIR=${QUARRY_MODEL_DIR:-$(dev/model.sh | tail -n 1)}
export QUARRY_MODEL_DIR
echo "$QUARRY_MODEL_DIR"

section "Build"
cargo build --quiet -p quarry
QUARRY="$ROOT/target/debug/quarry"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && QUARRY="$CARGO_TARGET_DIR/debug/quarry"
export QUARRY_CONFIG="$ROOT/dev/quarry.toml"
export QUARRY__DATABASE__URL="$url"

section "Ingest the Tate collection ($TATE_DIR)"
RUST_LOG=warn "$QUARRY" ingest tate --from "$TATE_DIR"

section "Migrate (the quarry schema)"
"$QUARRY" migrate

section "Serve"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$ROOT/.dev/demo-server.log"
mkdir -p "$ROOT/.dev"
RUST_LOG=${RUST_LOG:-info} "$QUARRY" serve --listen "127.0.0.1:$port" >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
echo "quarry serving on 127.0.0.1:$port (log: $log)"
export QUARRY_SERVER="http://127.0.0.1:$port"
# A curator sees everything (dev/quarry.toml [policy]); the governance
# section below asks again as other roles and tenants.
QUARRY_TOKEN=$("$QUARRY" token --tenant demo --subject demo-user --role curator)
export QUARRY_TOKEN

section "Search index (the sync inside serve: triggers, backfill, then every change)"
docs=""
for _ in $(seq 1 180); do
  status=$("$QUARRY" index status 2>/dev/null || true)
  if grep -q "backfill done" <<<"$status"; then
    docs=$(sed -n 's/^artworks: \([0-9]*\) documents.*/\1/p' <<<"$status")
    # BM25 is ready once the tantivy follower has every document.
    searchable=$("$QUARRY" search "painting" --mode bm25 --k 1 2>/dev/null | sed -n 's/.*; \([0-9]*\) documents.*/\1/p' || true)
    [[ -n "$docs" && "$searchable" == "$docs" ]] && break
  fi
  sleep 1
done
echo "$status"
echo "(embeddings fill in behind; vector search covers the embedded documents and says how many)"

searches=(
  'storms at sea|{"eq": {"field": "classification", "value": "on paper, unique"}}'
  'a woman reading a letter|{"range": {"field": "acquisition_year", "gte": 1950}}'
  'bequeathed watercolour of a ruined abbey|{"and": [{"range": {"field": "year_made", "lt": 1850}}, {"not": {"eq": {"field": "classification", "value": "painting"}}}]}'
)
for entry in "${searches[@]}"; do
  query=${entry%%|*}
  filter=${entry#*|}
  section "quarry search \"$query\" --filter '$filter'"
  "$QUARRY" search "$query" --filter "$filter" --k 5 --field title --field all_artists --field date_text
done

section "Summaries (built by serve at start-up: texts first, embeddings behind; unchanged entities are skipped later)"
# The collection-wide kind is written last, so once it exists every text does.
for _ in $(seq 1 600); do
  "$QUARRY" summaries show tate --kind collection >/dev/null 2>&1 && break
  sleep 1
done
"$QUARRY" summaries status || true
for entity in "turner|artist" "1950s|decade" "St Ives|movement" "tate|collection"; do
  section "quarry summaries show \"${entity%%|*}\" --kind ${entity#*|}"
  "$QUARRY" summaries show "${entity%%|*}" --kind "${entity#*|}"
done
section "quarry summaries search \"women artists since 1950\""
"$QUARRY" summaries search "women artists since 1950" --k 3

if (($# > 0)); then
  questions=("$@")
else
  questions=(
    "How many artworks are in the Tate collection?"
    "How many works by J.M.W. Turner were acquired before 1900?"
    "Which 10 artists have the most works in the collection?"
    "How has the share of acquired works by women changed by decade of acquisition since 1950?"
    "Which watercolours show storms or the sea?"
    "Which painting in the collection is the most beautiful?"
  )
fi
for q in "${questions[@]}"; do
  section "quarry ask \"$q\""
  "$QUARRY" ask --preview-rows 12 "$q"
done

# Governance: the same data as other roles and tenants see it.
section "Governance: an analyst may not see artists' gender (dev/quarry.toml [policy.roles.analyst])"
QUARRY_TOKEN=$("$QUARRY" token --tenant demo --subject ana --role analyst) \
  "$QUARRY" ask --preview-rows 5 "How has the share of acquired works by women changed by decade of acquisition since 1950?" || true
section "Row-level security: tenant 'modern' sees only works acquired since 1950 (tate.tenant_eras)"
QUARRY_TOKEN=$("$QUARRY" token --tenant modern --subject mo --role curator) \
  "$QUARRY" ask "How many artworks are in the Tate collection?"

# A conversation: a known question, then two follow-ups that narrow its SQL
# (router mode rewrites the previous turn's query; a model would be shown the
# earlier turns instead), then the stored turns.
section "A conversation: quarry ask, then two follow-ups with --conversation"
first=$("$QUARRY" ask --preview-rows 10 "What are the 10 most common mediums?")
printf '%s\n' "$first"
conversation=$(printf '%s\n' "$first" | sed -n 's/^» conversation //p' | sed -n 1p)
[[ -n "$conversation" ]] || {
  echo "demo: quarry ask printed no conversation id" >&2
  exit 1
}
for follow_up in "now only works acquired after 2000" "top 5 only"; do
  section "quarry ask --conversation $conversation \"$follow_up\""
  "$QUARRY" ask --conversation "$conversation" --preview-rows 10 "$follow_up"
done
section "quarry conversations show $conversation"
"$QUARRY" conversations show "$conversation"

section "Stop"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
tail -n 2 "$log"
