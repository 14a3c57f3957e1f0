#!/bin/bash
# Prepares a Buildkite stand-in state directory: test CA, server certificate, REST API token
# and two cluster agent tokens recorded in state.json. Idempotent: what exists and is still
# valid is kept. It starts no server and touches nothing outside DIR.
set -euo pipefail

dir=${1:?usage: setup.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
names=(agent.buildkite.test api.buildkite.test graphql.buildkite.test)
ips=(10.250.0.1 127.0.0.1)
umask 077
mkdir -p "$dir/tokens"
cd "$dir"

fingerprint() {  # sha256: + first 12 hex digits of the stored bytes
    printf 'sha256:%s' "$(sha256sum "$1" | cut -c1-12)"
}

new_secret() {  # PREFIX FILE: a random value written without a newline, mode 0600
    [ -s "$2" ] && return 0
    printf '%s%s' "$1" "$(openssl rand -hex 20)" > "$2.tmp"
    chmod 0600 "$2.tmp"
    mv "$2.tmp" "$2"
}

# 1. The test CA (ECDSA P-256: cheap handshakes for a fleet of agents).
if [ ! -s ca.key ] || [ ! -s ca.pem ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=bkfleet test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem 2>/dev/null
    rm -f server.pem
fi
chmod 0600 ca.key
chmod 0644 ca.pem

# 2. The server certificate, reissued when a name is missing or another CA signed it.
reissue=0
if [ -s server.pem ] && [ -s server.key ]; then
    for name in "${names[@]}"; do
        answer=$(openssl x509 -in server.pem -noout -checkhost "$name")
        [[ $answer == *"does match"* ]] || reissue=1
    done
    for ip in "${ips[@]}"; do
        answer=$(openssl x509 -in server.pem -noout -checkip "$ip")
        [[ $answer == *"does match"* ]] || reissue=1
    done
    openssl verify -CAfile ca.pem server.pem >/dev/null 2>&1 || reissue=1
else
    reissue=1
fi
if [ "$reissue" = 1 ]; then
    san=$(printf 'DNS:%s,' "${names[@]}")$(printf 'IP:%s,' "${ips[@]}")
    ext=$(mktemp)
    trap 'rm -f "$ext" server.csr' EXIT
    cat > "$ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=${san%,}
EOF
    openssl ecparam -name prime256v1 -genkey -noout -out server.key
    openssl req -new -key server.key -subj "/CN=agent.buildkite.test" -out server.csr
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
        -set_serial "0x$(openssl rand -hex 8)" -days 825 -sha256 -extfile "$ext" \
        -out server.pem 2>/dev/null
fi
chmod 0600 server.key
chmod 0644 server.pem

# 3. Secrets: the REST/GraphQL bearer token and two cluster agent tokens.
new_secret bkua_ api-token
new_secret bkct_ tokens/default.token
new_secret bkct_ tokens/second.token

# 4. Record the agent tokens (ids and SHA-256 only) in state.json.
python3 "$here/server.py" --init --state-dir "$dir"

echo "buildkite stand-in state in $dir:"
echo "  ca.pem        $(openssl x509 -in ca.pem -noout -fingerprint -sha256 | cut -d= -f2)"
echo "  server.pem    valid for ${names[*]} ${ips[*]}"
for file in api-token tokens/default.token tokens/second.token; do
    printf '  %-21s %s\n' "$file" "$(fingerprint "$file")"
done
