// Maps numeric uid/gid to user and group names from /etc/passwd and /etc/group (read once, lazily).

import { readFileSync } from 'node:fs';

function readTable(file: string): Map<number, string> {
  const table = new Map<number, string>();
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return table;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length >= 3 && /^\d+$/.test(fields[2]!)) {
      const id = Number(fields[2]);
      if (!table.has(id)) table.set(id, fields[0]!);
    }
  }
  return table;
}

export class OwnerNames {
  private users: Map<number, string> | null = null;
  private groups: Map<number, string> | null = null;

  user(uid: number): string {
    this.users ??= readTable('/etc/passwd');
    return this.users.get(uid) ?? '';
  }

  group(gid: number): string {
    this.groups ??= readTable('/etc/group');
    return this.groups.get(gid) ?? '';
  }

  /** uid for a user name on this machine, if it exists. */
  uidOf(name: string): number | undefined {
    this.users ??= readTable('/etc/passwd');
    for (const [id, user] of this.users) if (user === name) return id;
    return undefined;
  }

  gidOf(name: string): number | undefined {
    this.groups ??= readTable('/etc/group');
    for (const [id, group] of this.groups) if (group === name) return id;
    return undefined;
  }
}
