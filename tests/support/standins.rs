//! Stand-ins for OPA and Infracost, which cannot be obtained here. They follow the real tools'
//! command lines (`opa eval --format json --input F --data F QUERY`, `infracost breakdown
//! --path F --format json`), reject anything else, and answer in the tools' documented JSON
//! output formats. Their evaluation is deliberately simple and stated in each script.

/// `opa`: evaluates `data.<package>.deny` by the test convention
/// `# stand-in: deny if input contains <text> => <message>` in the policy file.
pub const OPA: &str = r##"#!/bin/sh
set -u
if [ "${1:-}" = version ]; then echo "Version: 0.68.0"; exit 0; fi
[ "${1:-}" = eval ] || { echo "opa: unknown command: ${1:-}" >&2; exit 2; }
shift
format=; input=; data=; query=
while [ $# -gt 0 ]; do
  case "$1" in
    --format) format=$2; shift 2;;
    --input) input=$2; shift 2;;
    --data) data=$2; shift 2;;
    -*) echo "opa eval: unknown flag: $1" >&2; exit 2;;
    *) [ -z "$query" ] || { echo "opa eval: one query expected" >&2; exit 2; }; query=$1; shift;;
  esac
done
[ "$format" = json ] || { echo "opa eval: this stand-in needs --format json" >&2; exit 2; }
[ -r "$input" ] || { echo "opa eval: cannot read input $input" >&2; exit 2; }
[ -r "$data" ] || { echo "opa eval: cannot read data $data" >&2; exit 2; }
package=$(sed -n 's/^package[[:space:]]*//p' "$data" | head -n 1)
[ "$query" = "data.$package.deny" ] || { echo "opa eval: unexpected query $query" >&2; exit 2; }
out=
while IFS= read -r line; do
  case "$line" in
    "# stand-in: deny if input contains "*)
      rule=${line#"# stand-in: deny if input contains "}
      needle=${rule%% => *}
      msg=${rule#* => }
      if grep -qF -- "$needle" "$input"; then out="$out${out:+,}\"$msg\""; fi;;
  esac
done < "$data"
printf '{"result":[{"expressions":[{"value":[%s],"text":"%s","location":{"row":1,"col":1}}]}]}\n' "$out" "$query"
"##;

/// `infracost`: costs $10 per month for every output or resource the plan creates.
pub const INFRACOST: &str = r##"#!/bin/sh
set -u
[ "${1:-}" = breakdown ] || { echo "Error: unknown command \"${1:-}\" for \"infracost\"" >&2; exit 1; }
shift
path=; format=table
while [ $# -gt 0 ]; do
  case "$1" in
    --path) path=$2; shift 2;;
    --format) format=$2; shift 2;;
    *) echo "Error: unknown flag: $1" >&2; exit 1;;
  esac
done
[ -n "${INFRACOST_API_KEY:-}" ] || { echo "Error: No INFRACOST_API_KEY environment variable is set." >&2; exit 1; }
[ "$format" = json ] || { echo "Error: this stand-in only writes --format json" >&2; exit 1; }
[ -r "$path" ] || { echo "Error: could not read $path" >&2; exit 1; }
n=$(grep -o '"actions":\["create"\]' "$path" | wc -l)
cost=$((n * 10))
cur=${INFRACOST_CURRENCY:-USD}
printf '{"version":"0.2","metadata":{"infracostCommand":"breakdown"},"currency":"%s","projects":[{"name":"%s","pastBreakdown":{"totalMonthlyCost":"0"},"breakdown":{"totalMonthlyCost":"%s"},"diff":{"totalMonthlyCost":"%s"}}],"totalHourlyCost":null,"totalMonthlyCost":"%s","pastTotalHourlyCost":null,"pastTotalMonthlyCost":"0","diffTotalHourlyCost":null,"diffTotalMonthlyCost":"%s","timeGenerated":"2026-01-01T00:00:00Z","summary":{"totalDetectedResources":%s}}\n' "$cur" "$path" "$cost" "$cost" "$cost" "$cost" "$n"
"##;
