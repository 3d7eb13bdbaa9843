#!/usr/bin/env bash
# The reference for bench/deploy_bench.py: the staging deployment and the quick rollback done by hand, with the
# runbooks' own commands (000 "Staging Deployment" steps 1-7 and "Quick Rollback", 001 "T-0" steps 1-7), on the
# sample application and the local stack, for the same steps as playbooks/deploy_staging.yml and rollback.yml:
#
#   check     pg_isready, psql "SELECT version()", aws sts get-caller-identity, redis-cli ping, df, curl /health
#   build     copy the source into releases/<version>, link .env, npm run build (beside the running release)
#   database  (not on a first deploy) auto_sync off in Postgres, poll until no queue item is in processing;
#             pg_dump -Fc to a file, pg_restore --list, aws s3 cp; prisma migrate status, (first deploy: prisma
#             migrate resolve --applied <baseline>), prisma migrate deploy, prisma migrate status, psql \d of the
#             tables, REFRESH MATERIALIZED VIEW CONCURRENTLY + ANALYZE
#   backends  ln -sfn, pm2 start (first) or
#             pm2 reload ecosystem.config.js --env staging; curl /health until it answers the new version (the
#             runbook's `sleep 30; curl` without the sleep); smoke curls (/health, /api/cases, /metrics)
#   release   frontend: copy, npm ci, npm run build, aws s3 sync --delete, aws cloudfront create-invalidation;
#             new_case_view rolled out 25 % then 100 % with psql; (not first) auto_sync back on; the watch window
#   rollback  ln -sfn releases/<previous> current && pm2 reload; frontend s3 sync of the previous build +
#             invalidation; smoke curls
#
# Fixed waits: the runbook's `sleep 30` is left out (replaced by polling /health); the waits the local inventory
# gives the playbook are done here too, so that both sides wait the same: BENCH_STABLE_FOR (1 s, the backend
# role's backend_pm2_stable_for) after a PM2 start/reload, BENCH_ROLLOUT_PAUSE (1 s, flags_rollout_pause) after
# each rollout step, and BENCH_WATCH (4 s, watch_duration) polling /metrics and /health every second.
#
# AWS: the real `aws` CLI with --endpoint-url (moto) when it runs here; BENCH_AWS=boto3 (or no CLI) uses
# one-line `python -c` boto3 calls as the stand-in for `aws s3 cp`, `aws s3 sync --delete`, `aws cloudfront
# create-invalidation` and `aws sts get-caller-identity`.
#
# Usage (the environment prepared by playbooks/local_sample_app.yml, as for the playbook):
#   runbook_by_hand.sh deploy <version> [<previous version>]  |  runbook_by_hand.sh rollback <previous version>
# Environment: BENCH_ENV (environment name), BENCH_ROOT (its directory; PM2_HOME is BENCH_ROOT/pm2), BENCH_PORT,
# BENCH_DISTRIBUTION_ID, DATABASE_URL, PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE, RUNBOOK_REPO,
# RUNBOOK_S3_ENDPOINT_URL, RUNBOOK_REDIS_URL, AWS_* credentials; BENCH_PYTHON (for the boto3 stand-in).
# Prints "@phase <name> <epoch>" when a phase starts and "@phase end <epoch>" at the end; command output goes to
# BENCH_ROOT/by_hand.log.
set -euo pipefail

: "${BENCH_ENV:?}" "${BENCH_ROOT:?}" "${BENCH_PORT:?}" "${DATABASE_URL:?}" "${PGDATABASE:?}" "${RUNBOOK_REPO:?}"
: "${RUNBOOK_S3_ENDPOINT_URL:?}" "${RUNBOOK_REDIS_URL:?}"
STABLE_FOR=${BENCH_STABLE_FOR:-1}
ROLLOUT_PAUSE=${BENCH_ROLLOUT_PAUSE:-1}
WATCH=${BENCH_WATCH:-4}
PY=${BENCH_PYTHON:-python3}
BASE=http://127.0.0.1:$BENCH_PORT
APP=$BENCH_ROOT/app
FRONT_BUILDS=$BENCH_ROOT/frontend
BUCKET=sample-app-frontend-$BENCH_ENV
BACKUPS=s3://sample-app-backups/$BENCH_ENV/postgres/
export PM2_HOME=$BENCH_ROOT/pm2
export NODE_PATH=$RUNBOOK_REPO/node_modules
PM2=$RUNBOOK_REPO/node_modules/.bin/pm2
PRISMA=$RUNBOOK_REPO/node_modules/.bin/prisma
mkdir -p "$APP/releases" "$APP/shared" "$FRONT_BUILDS" "$BENCH_ROOT/backups"
LOG=$BENCH_ROOT/by_hand.log
exec 3>&1 >>"$LOG" 2>&1
# Each command in the log with the time it started (bash 5: no subprocess), to see where the time goes.
PS4='+ $EPOCHREALTIME '
set -x

mark() { echo "@phase $1 $EPOCHREALTIME" >&3; echo "=== $1"; }

# `command -v`, not `aws --version`: the check must not cost a Python start-up inside the timed run.
if [ "${BENCH_AWS:-cli}" = cli ] && command -v aws >/dev/null; then AWS_MODE=cli; else AWS_MODE=boto3; fi
E=$RUNBOOK_S3_ENDPOINT_URL
sts_who() {
  if [ $AWS_MODE = cli ]; then aws --endpoint-url "$E" sts get-caller-identity
  else "$PY" -c 'import boto3,sys; print(boto3.client("sts",endpoint_url=sys.argv[1]).get_caller_identity()["Arn"])' "$E"; fi
}
s3_cp() {  # file s3://bucket/prefix/
  if [ $AWS_MODE = cli ]; then aws --endpoint-url "$E" s3 cp "$1" "$2"
  else "$PY" -c 'import boto3,os,sys; b,p=sys.argv[2][5:].split("/",1); boto3.client("s3",endpoint_url=sys.argv[3]).upload_file(sys.argv[1],b,p+os.path.basename(sys.argv[1]))' "$1" "$2" "$E"; fi
}
s3_sync_delete() {  # dir bucket
  if [ $AWS_MODE = cli ]; then aws --endpoint-url "$E" s3 sync "$1/" "s3://$2/" --delete
  else "$PY" -c 'import boto3,os,sys; d,b=sys.argv[1:3]; s=boto3.client("s3",endpoint_url=sys.argv[3]); k={os.path.relpath(os.path.join(r,f),d) for r,_,fs in os.walk(d) for f in fs}; [s.upload_file(os.path.join(d,x),b,x) for x in k]; [s.delete_object(Bucket=b,Key=o["Key"]) for o in s.list_objects_v2(Bucket=b).get("Contents",[]) if o["Key"] not in k]' "$1" "$2" "$E"; fi
}
cf_invalidate() {
  if [ $AWS_MODE = cli ]; then aws --endpoint-url "$E" cloudfront create-invalidation --distribution-id "$1" --paths "/*"
  else "$PY" -c 'import boto3,sys,time; print(boto3.client("cloudfront",endpoint_url=sys.argv[2]).create_invalidation(DistributionId=sys.argv[1],InvalidationBatch={"Paths":{"Quantity":1,"Items":["/*"]},"CallerReference":str(time.time())})["Invalidation"]["Id"])' "$1" "$E"; fi
}

health_version() { curl -fsS --max-time 2 "$BASE/health" | jq -r .version; }
wait_version() {  # the runbook's `sleep 30; curl /health`, without the sleep: poll until the version answers
  local deadline=$((SECONDS + 60))
  until [ "$(health_version 2>/dev/null || true)" = "$1" ]; do
    [ $SECONDS -lt $deadline ] || { echo "health never answered $1" >&2; exit 1; }
    sleep 0.1
  done
}
pm2_stable() {  # what the backend role's stable_for does: every instance online after BENCH_STABLE_FOR seconds
  sleep "$STABLE_FOR"
  "$PM2" jlist | jq -e 'all(.[]; .pm2_env.status == "online")' >/dev/null
}
smoke() {
  curl -fsS --max-time 5 "$BASE/health" | jq -e --arg v "$1" '.status == "healthy" and .version == $v' >/dev/null
  curl -fsS --max-time 5 -o /dev/null "$BASE/api/cases"
  curl -fsS --max-time 5 "$BASE/metrics" | grep -q http_requests_total
}
set_flag() {  # name enabled [percentage]
  psql -v ON_ERROR_STOP=1 -qc "INSERT INTO feature_flags (flag_name, enabled, rollout_percentage)
    VALUES ('$1', $2, ${3:-100}) ON CONFLICT (flag_name) DO UPDATE SET enabled = EXCLUDED.enabled${3:+, rollout_percentage = EXCLUDED.rollout_percentage};"
}
publish_frontend() {  # version (built under FRONT_BUILDS/<version>/dist)
  s3_sync_delete "$FRONT_BUILDS/$1/dist" "$BUCKET"
  cf_invalidate "$BENCH_DISTRIBUTION_ID"
}

deploy() {
  local version=$1 previous=${2:-}
  mark check
  pg_isready -q
  psql -v ON_ERROR_STOP=1 -Atc 'SELECT version();'
  sts_who
  redis-cli -u "$RUNBOOK_REDIS_URL" ping | grep -q PONG
  df -P "$BENCH_ROOT"
  [ -z "$previous" ] || [ "$(health_version)" = "$previous" ]

  mark build
  local release=$APP/releases/$version
  { set +x; } 2>/dev/null  # the .env holds the database URL: keep it out of the trace
  printf 'PORT=%s\nAPI_NAME=%s-api\nWORKER_NAME=%s-worker\nAPP_DIR=%s\nDATABASE_URL=%s\nNODE_PATH=%s\n' \
    "$BENCH_PORT" "$BENCH_ENV" "$BENCH_ENV" "$APP/current" "$DATABASE_URL" "$NODE_PATH" > "$APP/shared/.env"
  set -x
  rm -rf "$release"
  cp -a "$RUNBOOK_REPO/sample_app/backend/." "$release/"
  ln -sfn "$APP/shared/.env" "$release/.env"
  (cd "$release" && APP_VERSION=$version npm run build)
  mark database
  if [ -n "$previous" ]; then
    psql -v ON_ERROR_STOP=1 -c "UPDATE feature_flags SET enabled = false WHERE flag_name = 'auto_sync';"
    until [ "$(psql -Atc "SELECT count(*) FROM sync_queue WHERE status = 'processing';")" = 0 ]; do sleep 0.5; done
  fi
  local dump
  dump=$BENCH_ROOT/backups/${PGDATABASE}.pre_migration.$(date +%Y%m%dT%H%M%SZ).dump
  pg_dump -Fc -f "$dump" "$PGDATABASE"
  pg_restore --list "$dump" >/dev/null
  s3_cp "$dump" "$BACKUPS"
  cd "$release"  # the migrations run from the new release's code (the inventory's migrate_project_path)
  "$PRISMA" migrate status || true  # exits 1 while migrations are pending
  if [ "$(psql -Atc "SELECT to_regclass('_prisma_migrations') IS NULL")" = t ]; then
    "$PRISMA" migrate resolve --applied 20260101000000_create_cases
  fi
  "$PRISMA" migrate deploy
  "$PRISMA" migrate status
  psql -v ON_ERROR_STOP=1 -c '\d cases' -c '\d sync_queue' -c '\d feature_flags'
  psql -v ON_ERROR_STOP=1 -c 'REFRESH MATERIALIZED VIEW CONCURRENTLY case_status_counts' -c 'ANALYZE'

  mark backends
  ln -sfn "$release" "$APP/current"
  cd "$APP/current"
  if [ -z "$previous" ]; then
    "$PM2" start ecosystem.config.js --env staging
  else
    "$PM2" reload ecosystem.config.js --env staging
  fi
  wait_version "$version"
  pm2_stable
  smoke "$version"

  mark release
  local build=$FRONT_BUILDS/$version
  rm -rf "$build"
  cp -a "$RUNBOOK_REPO/sample_app/frontend/." "$build/"
  (cd "$build" && npm ci --no-audit --no-fund && FRONTEND_VERSION=$version npm run build)
  publish_frontend "$version"
  for percent in 25 100; do
    set_flag new_case_view true "$percent"
    sleep "$ROLLOUT_PAUSE"
    curl -fsS --max-time 5 "$BASE/health" | jq -e '.status == "healthy"' >/dev/null
  done
  [ -z "$previous" ] || set_flag auto_sync true
  local until=$((SECONDS + WATCH))
  while [ $SECONDS -lt $until ]; do  # the watch window: /metrics and /health every second
    curl -fsS --max-time 2 -o /dev/null "$BASE/metrics"
    curl -fsS --max-time 2 -o /dev/null "$BASE/health"
    sleep 1
  done
  mark end
}

rollback() {
  local to=$1
  mark rollback
  [ -d "$APP/releases/$to" ] || { echo "no release $to" >&2; exit 1; }
  ln -sfn "$APP/releases/$to" "$APP/current"
  cd "$APP/current"
  "$PM2" reload ecosystem.config.js --env staging
  wait_version "$to"
  pm2_stable
  publish_frontend "$to"
  smoke "$to"
  mark end
}

case "${1:-}" in
  deploy) shift; echo "aws: $AWS_MODE"; deploy "$@" ;;
  rollback) shift; rollback "$@" ;;
  *) echo "usage: $0 deploy <version> [<previous version>] | rollback <previous version>" >&3; exit 2 ;;
esac
