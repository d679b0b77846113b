// IndexedDB: the tickets on this phone (credential, holder key, last known
// status) and claims in flight (so a retry after a lost answer reuses the key).

const DB = "gt1-wallet";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("tickets", { keyPath: "ticketId" });
      db.createObjectStore("pending", { keyPath: "claimHash" });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function run(store, mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const req = fn(tx.objectStore(store));
      tx.oncomplete = () => resolve(req ? req.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export const tickets = {
  all: () => run("tickets", "readonly", (s) => s.getAll()),
  get: (id) => run("tickets", "readonly", (s) => s.get(id)),
  put: (t) => run("tickets", "readwrite", (s) => s.put(t)),
};

export const pending = {
  get: (h) => run("pending", "readonly", (s) => s.get(h)),
  put: (p) => run("pending", "readwrite", (s) => s.put(p)),
  remove: (h) => run("pending", "readwrite", (s) => s.delete(h)),
};
