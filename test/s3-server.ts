// An S3 server from npm (s3rver) with one bucket "registry", in its own process (tests call
// skopeo synchronously, which would stall a server in the test's own event loop).
//   node --import tsx test/s3-server.ts DIR   → prints {"port":N} once listening; SIGTERM stops it
// @ts-expect-error s3rver ships no types
import S3rver from "s3rver";

const server = new S3rver({ port: 0, address: "127.0.0.1", silent: true, directory: process.argv[2], configureBuckets: [{ name: "registry", configs: [] }] });
const { port } = (await server.run()) as { port: number };
process.stdout.write(JSON.stringify({ port }) + "\n");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
