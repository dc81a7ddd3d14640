// A tar made with Blanket's own member headers (formats/tar-member.ts), for tests of what reads packs.
import { END_OF_TAR_SIZE, memberTarSize, TAR_BLOCK, writeMemberHeader } from '../../src/formats/tar-member.js';

/** The members, each padded to whole blocks, then the end-of-archive blocks. */
export function tarOfMembers(members: ReadonlyArray<{ readonly name: string; readonly content: Buffer }>): Buffer {
  const out = Buffer.alloc(members.reduce((sum, m) => sum + memberTarSize(m.content.length), 0) + END_OF_TAR_SIZE);
  let at = 0;
  for (const { name, content } of members) {
    writeMemberHeader(out, at, name, content.length);
    content.copy(out, at + TAR_BLOCK);
    at += memberTarSize(content.length);
  }
  return out;
}
