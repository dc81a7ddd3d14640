// Opening and creating archives: the header object, and refusing to write into a folder that is not an archive.

import { randomBytes } from 'node:crypto';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { classifyObjectName, encodeHeader, FORMAT_NAME, FORMAT_VERSION, HEADER_OBJECT, type ArchiveHeader } from '../formats/archive-layout.js';
import type { Store } from '../stores/store.js';
import { LocalStore } from '../stores/local.js';
import { readArchiveHeader } from '../stages/state-reader.js';

/** The store for an archive location (a local path; remote kinds come with the stores issue). */
export function openStore(location: string): Store {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new BlanketError(ErrorCodes.USAGE, `archive location ${location}: only local paths are supported in this version`, { subject: location });
  }
  return new LocalStore(location);
}

/** Creates a new archive; the location must be absent or empty. */
export async function initArchive(store: Store): Promise<ArchiveHeader> {
  for await (const info of store.list('')) {
    if (info.name === HEADER_OBJECT) {
      throw new BlanketError(ErrorCodes.USAGE, `${store.location} is already a Blanket archive`, { subject: store.location });
    }
    if (classifyObjectName(info.name) !== undefined) {
      throw new BlanketError(
        ErrorCodes.NOT_AN_ARCHIVE,
        `${store.location} holds Blanket layers but its header ${HEADER_OBJECT} is missing: nothing is written to it ` +
          `(restore and verify still read it)`,
        { subject: HEADER_OBJECT },
      );
    }
    throw new BlanketError(
      ErrorCodes.NOT_AN_ARCHIVE,
      `${store.location} is not empty and not a Blanket archive (it holds ${info.name}); choose an empty or new folder`,
      { subject: store.location },
    );
  }
  // list() shows only names an archive could hold: a folder of other files can look empty through it.
  if (!(await store.isEmpty())) {
    throw new BlanketError(
      ErrorCodes.NOT_AN_ARCHIVE,
      `${store.location} is not empty and not a Blanket archive (it holds files of its own); choose an empty or new folder`,
      { subject: store.location },
    );
  }
  const header: ArchiveHeader = { format: FORMAT_NAME, version: FORMAT_VERSION, id: randomBytes(16).toString('hex'), created: new Date().toISOString() };
  if (!(await store.putIfAbsent(HEADER_OBJECT, encodeHeader(header)))) {
    throw new BlanketError(ErrorCodes.USAGE, `${store.location} was made an archive by another run just now`, { subject: store.location });
  }
  return header;
}

/** Reads the archive header, creating the archive first when allowed and the location is new or empty. */
export async function ensureArchive(store: Store, create: boolean): Promise<ArchiveHeader> {
  try {
    return await readArchiveHeader(store);
  } catch (error) {
    if (!create || !isBlanketError(error, ErrorCodes.NOT_AN_ARCHIVE)) throw error;
    return initArchive(store);
  }
}
