import { spawn } from 'node:child_process';

/**
 * Leave a Unix-domain socket file at `path` as a process killed while it listened there does:
 * the file stays, and a connection to it is refused.
 */
export async function deadSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, [
    '-e',
    `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
  ]);
  await new Promise((resolve) => child.stdout.once('data', resolve));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
}
