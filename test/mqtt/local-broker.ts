/**
 * A bare aedes broker in this process on a free loopback port (memory persistence), for the MQTT
 * client and `status` tests. Deliberately not broker/broker.ts: these tests exercise the client
 * adapter against a real broker, not the embedded broker's configuration. aedes 1.2 speaks MQTT
 * 3.1.1 only; the MQTT 5 tests use Mosquitto (test/helpers/mosquitto.ts).
 */
import net from "node:net";
import { Aedes, type AedesOptions } from "aedes";

export interface LocalBroker {
  /** The aedes instance, for its events ('subscribe', 'publish'). */
  aedes: Aedes;
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startLocalBroker(o: AedesOptions = {}): Promise<LocalBroker> {
  const broker = await Aedes.createBroker(o);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    broker.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    aedes: broker,
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async close() {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Clients that are still connected (reconnecting ones) would keep close() waiting.
        for (const s of sockets) s.destroy();
      });
    },
  };
}

/** A loopback port that nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
