#!/bin/bash
# cipher/group choice when the client offers in a given order. args: PORT_H PORT_N
c() { echo | timeout 5 openssl s_client -connect 127.0.0.1:$1 -servername www.example.test "${@:2}" 2>&1 | grep -E '^New|Server Temp Key|alert number' | tr '\n' ' '; echo; }
for p in $1 $2; do
 echo "== $p"
 echo " 1.2 client AES256,AES128,CHACHA: $(c $p -tls1_2 -cipher ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305)"
 echo " 1.2 client AES128,AES256:       $(c $p -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384)"
 echo " 1.3 client AES128,CHACHA,AES256: $(c $p -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384)"
 echo " 1.3 client CHACHA,AES128:       $(c $p -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256)"
 echo " 1.2 groups X25519:P-256:P-384:   $(c $p -tls1_2 -groups X25519:P-256:P-384)"
 echo " 1.2 groups P-256:P-384:X25519:   $(c $p -tls1_2 -groups P-256:P-384:X25519)"
 echo " 1.3 groups X25519:P-384 (share X25519): $(c $p -tls1_3 -groups X25519:P-384)"
 echo " 1.3 groups P-256:P-384 (share P-256):   $(c $p -tls1_3 -groups P-256:P-384)"
 echo " 1.3 groups P-256 only:          $(c $p -tls1_3 -groups P-256)"
 echo " 1.2 groups P-256 only:          $(c $p -tls1_2 -groups P-256)"
 echo " 1.2 groups X448 only:           $(c $p -tls1_2 -groups X448)"
done
