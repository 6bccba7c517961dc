import type { ErrorCodeTable } from "./types.js";

/** The MQTT API and its client adapter (src/mqtt, docs/mqtt-api.md). */
export const mqttCodes = {
  E_MQTT_CONNECT: {
    meaning:
      "Could not connect to the MQTT broker: a bad URL, nothing listening, a TLS failure, the broker refused the credentials or the protocol version, or no answer within the connect timeout. The message says which.",
    action:
      "Check the broker URL and that the broker runs (`esp-ota broker` for the embedded one). For TLS pass the CA that signed the broker's certificate; for a refusal check the user name and password file. A broker that refuses MQTT 5 needs protocol version 4.",
  },
  E_MQTT_TIMEOUT: {
    meaning: "No answer to a command request within the timeout.",
    action:
      "Check that the gateway is online (`esp-ota status` shows its presence) and uses the same topic prefix; then retry, with a longer timeout for slow commands.",
  },
  E_MQTT_MESSAGE_JSON: {
    meaning: "An MQTT payload is not UTF-8 JSON, or is larger than 256 KiB.",
    action:
      "Fix the publisher: payloads are JSON documents (docs/mqtt-api.md). A tool publishing to our topics by mistake is the usual cause.",
  },
  E_MQTT_MESSAGE_SCHEMA: {
    meaning:
      "An MQTT payload is JSON but not the message the topic carries (a missing or wrong field, or another format version); the message names the field.",
    action:
      "Compare the publisher's message with docs/schemas/mqtt-*.schema.json; a newer `format` needs a newer esp-ota.",
  },
  E_MQTT_TOPIC: {
    meaning:
      "An id cannot be a topic level (it must be 1..64 of A-Z a-z 0-9 . _ -), or the topic prefix is not a valid MQTT topic prefix.",
    action:
      "Use another id, or fix the prefix: no + or #, no empty level, no leading or trailing /, not starting with $.",
  },
  E_MQTT_SUBSCRIBE: {
    meaning:
      "The broker refused a subscription (SUBACK failure), usually because its access control list does not allow this user to read the topic.",
    action:
      "Allow the user to subscribe to the topics under the prefix (docs/mqtt-api.md lists who reads what), or connect as a user that may.",
  },
  E_MQTT_PUBLISH: {
    meaning:
      "A message could not be published: the connection closed before the broker acknowledged it, or the broker refused it (MQTT 5 PUBACK reason code, e.g. not authorized).",
    action:
      "Check the connection and the broker's access control list for the topic; then run the command again.",
  },
  E_MQTT_COMMAND: {
    meaning: "A gateway's command handler failed unexpectedly while answering a command.",
    action: "Read the gateway's log around the time of the command; retry the command.",
  },
  E_MQTT_REPLY_REFUSED: {
    meaning:
      'A gateway did not answer a command because its reply address (MQTT 5 response topic or `replyTo`) is not under the gateway\'s reply space `<prefix>/replies/<clientId>` (docs/mqtt-api.md "Commands"): a command must not make a gateway publish anywhere else. The gateway logs the refusal.',
    action:
      "Send commands with `esp-ota` tools or any client that replies to `<prefix>/replies/<its client id>`.",
  },
  E_MQTT_UNKNOWN_DEVICE: {
    meaning:
      "Nothing on the broker mentions the device: no status, no desired update, and no gateway inventory lists it.",
    action:
      "Check the device id and the topic prefix; `esp-ota status` without --device lists every device the broker knows.",
  },
  E_MQTT_GATEWAYS_FILE: {
    meaning:
      "The gateways file (the gateways whose signed statuses are trusted, `esp-ota gateways add`) is not valid: not JSON, a field wrong, a key id that does not belong to its key, or a gateway listed twice.",
    action:
      "Fix or rebuild it with `esp-ota gateways add FILE --identity '<the line esp-ota agent key printed on the gateway>'`.",
  },
  E_MQTT_STATUS_GATEWAY_UNKNOWN: {
    meaning:
      "A device status names a gateway that is not in the gateways file, so it cannot be authenticated and is ignored (it neither advances nor aborts a rollout).",
    action:
      "If the gateway is yours, run `esp-ota agent key --config gateway.yaml` on it and add its identity with `esp-ota gateways add`; otherwise someone else publishes statuses on your broker.",
  },
  E_MQTT_STATUS_UNSIGNED: {
    meaning:
      "A device status carries no signature while statuses are being authenticated (--gateways): it is ignored. Agents before signed statuses, or a forgery.",
    action:
      "Upgrade the gateway's agent (it signs every status); if it is up to date, someone else publishes statuses on your broker: check the broker's access control.",
  },
  E_MQTT_STATUS_SIGNATURE: {
    meaning:
      "A device status's signature does not verify under the key registered for the gateway it names (another key, or a changed byte): it is ignored.",
    action:
      "If the gateway's key was replaced (its state directory recreated), register its new identity (`esp-ota agent key`, `esp-ota gateways add`); otherwise treat it as a forged status and check the broker's access control.",
  },
} satisfies ErrorCodeTable;
