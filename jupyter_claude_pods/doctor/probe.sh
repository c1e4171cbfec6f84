# The doctor's egress probe, run as `bash -c <this file> claude-pods-probe SECONDS TARGET...`
# inside a throw-away sandbox pod. bash (for /dev/tcp) and coreutils' timeout are
# "Essential" Debian packages, so they are in the sandbox image; it has no Node or Python
# (the Claude Code CLI is a native binary).
# A target is host:port, [v6-address]:port, or @kubernetes: the API server's Service, as
# the kubelet announces it to every pod ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
# Prints one line per target: CLAUDE-PODS-PROBE <target> <address> <result> <message>,
# result being connected | refused | timeout | unreachable | unresolved | error.
seconds=$1
shift
probe() {
  local spec=$1 host port address err rc result
  case $spec in
    @kubernetes)
      host=${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}
      port=${KUBERNETES_SERVICE_PORT:-443} ;;
    \[*\]:*)
      host=${spec%]:*}; host=${host#[}; port=${spec##*:} ;;
    *:*)
      host=${spec%:*}; port=${spec##*:} ;;
    *)
      printf 'CLAUDE-PODS-PROBE %s %s error bad-target\n' "$spec" "$spec"; return ;;
  esac
  address=$host:$port
  case $host in *:*) address="[$host]:$port" ;; esac
  err=$(timeout "$seconds" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>&1)
  rc=$?
  case $rc in
    0) result=connected ;;
    124) result=timeout ;;
    *)
      case $err in
        *refused*|*reset*) result=refused ;;
        *"No route"*|*nreachable*|*"not permitted"*|*"Permission denied"*) result=unreachable ;;
        *"not known"*|*"name resolution"*|*"No address"*|*"not resolve"*) result=unresolved ;;
        *) result=error ;;
      esac ;;
  esac
  err=${err%%$'\n'*}
  err=${err##*: }
  printf 'CLAUDE-PODS-PROBE %s %s %s %s\n' "$spec" "$address" "$result" "${err//[$'\r\t']/ }"
}
for target in "$@"; do
  probe "$target" &
done
wait
