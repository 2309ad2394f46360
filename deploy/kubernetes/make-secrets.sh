#!/bin/sh
# Makes the files behind the cluster's Secrets, with openssl only, into DIR
# (a new directory, mode 0700; every file 0600):
#   token           the cluster token (64 hex digits) -> Secret manta-token
#   ca.pem, ca.key  the cluster CA (EC P-256)         -> Secret manta-ca (the head only)
#   ca-hash         sha256:<hex of the CA's DER>      -> ConfigMap manta-ca-hash (workers pin it)
#   redis-password  for the optional Redis             -> Secret manta-redis
# It talks to no cluster: docs/kubernetes.md shows the kubectl commands that
# load these files, and the files never enter the manifests or the repo.
set -eu
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR  (DIR must not exist yet)" >&2
  exit 2
fi
dir=$1
umask 077
mkdir "$dir"
openssl rand -hex 32 > "$dir/token"
openssl rand -hex 32 > "$dir/redis-password"
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
# A CA that signs only leaf certificates (pathlen 0), for ten years; the head
# sets each node certificate's names and usages itself.
openssl req -x509 -new -key "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -sha256 \
  -subj "/CN=manta cluster CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
# What `manta start --head` prints as the CA fingerprint, and --ca-hash pins.
printf 'sha256:%s\n' "$(openssl x509 -in "$dir/ca.pem" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)" \
  > "$dir/ca-hash"
echo "wrote $dir: token, ca.pem, ca.key, ca-hash, redis-password"
echo "CA fingerprint: $(cat "$dir/ca-hash")"
