import type { ErrorCodeTable } from "./types.js";

/** The embedded MQTT broker (broker/, docs/broker.md). */
export const brokerCodes = {
  E_BROKER_LISTEN: {
    meaning:
      "`esp-ota broker` could not listen on the address and port: another broker (often a system Mosquitto on 1883) or program holds it, the address is not one of this machine's, or a port below 1024 needs privileges.",
    action:
      "Stop what uses the port (`ss -ltnp 'sport = :1883'` names it) or pick another --port (0 chooses a free one); check --host.",
  },
  E_BROKER_TLS: {
    meaning:
      "The broker's TLS certificate, key or CA could not be read or used (missing file, not PEM, a key that does not match the certificate).",
    action:
      "Check the --tls-cert, --tls-key and --tls-ca paths and that the key belongs to the certificate (`openssl x509 -noout -pubkey -in CERT` and `openssl pkey -pubout -in KEY` print the same key).",
  },
  E_BROKER_USERS: {
    meaning:
      "The broker's users file could not be read or has a malformed line (the message gives the line number).",
    action:
      "Each line is `username:scrypt$N$r$p$salt$key`; recreate bad entries with `esp-ota broker passwd --users FILE USER` (docs/broker.md).",
  },
  E_BROKER_DATA: {
    meaning:
      "The broker's persistence directory (--data) could not be opened: no permission, or another broker process is using it (LevelDB takes a lock).",
    action:
      "Stop the other broker that uses the directory, or give each broker its own --data directory; check its permissions.",
  },
} as const satisfies ErrorCodeTable;
