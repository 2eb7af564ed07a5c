#!/usr/bin/env bash
# Run `declare plan` for a pull request and leave what the comment and the artifact need:
#   OUT/plan.md      the Markdown comment (or the error, when planning failed)
#   OUT/exitcode     0 no changes, 2 changes, 1 error (plan --detailed-exitcode)
#   OUT/plan.bin     the saved plan, when PLAN_FILE is set (declare plan --out)
# Exits 0 when a plan was made (changes or not), 1 when planning failed.
# Usage: plan.sh [PROJECT_DIR] [OUT_DIR]; DECLARE overrides the command (default:
# `python -m declare`: `declare` alone would be the bash builtin).
set -uo pipefail
project=${1:-.}
out=${2:-declare-plan}
mkdir -p "$out"
read -r -a cmd <<< "${DECLARE:-python -m declare}"
args=(plan "$project" --format markdown --detailed-exitcode)
if [[ -n "${PLAN_FILE:-}" ]]; then
    args+=(--out "$out/$PLAN_FILE")
fi
"${cmd[@]}" "${args[@]}" > "$out/plan.md" 2> "$out/plan.err"
code=$?
echo "$code" > "$out/exitcode"
if [[ $code -ne 0 && $code -ne 2 ]]; then
    {
        echo "**declare plan failed** (exit $code); nothing will be applied from this commit."
        echo
        echo '```text'
        cat "$out/plan.err"
        echo '```'
    } > "$out/plan.md"
fi
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
    echo "changes=$([[ $code -eq 2 ]] && echo true || echo false)" >> "$GITHUB_OUTPUT"
    echo "exitcode=$code" >> "$GITHUB_OUTPUT"
fi
cat "$out/plan.md"
[[ $code -eq 0 || $code -eq 2 ]]
