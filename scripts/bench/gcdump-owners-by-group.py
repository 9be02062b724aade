#!/usr/bin/env python3
"""Groups gcdump-owners.sh's owners.tsv (bytes, count, owner type, object type) by owner; prints KiB per node and B per connection end."""
import sys, re, collections
rules = [
 ('async state machines', r'^AsyncStateMachineBox<.*(Yamux|Host\.|Transport|Security|Noise|Multistream|LengthPrefixed)'),
 ('async state machines (protocols on streams)', r'^AsyncStateMachineBox<'),
 ('Yamux', r'Potluck\.Protocol\.Yamux|Channels\..*<Potluck\.Protocol\.Yamux'),
 ('security layer', r'Potluck\.Protocol\.(Security|Noise)|LazyNegotiat'),
 ('transport (memory)', r'Potluck\.Protocol\.Transport'),
 ('registrations (CTS, callback nodes)', r'^(Potluck\.Protocol\.Runtime\.BackgroundWork|Admission)$'),
 ('background work pieces', r'^Piece$'),
 ('host / connection manager', r'Potluck\.Protocol\.Host\.(Connection|ConnectionManager|StreamRouter|Libp2pHost|Libp2pStream|ResourceManager)|^(StreamReservation|ConnectionMemory)$'),
 ('identify', r'Potluck\.Protocol\.Identify'),
 ('gossipsub', r'Gossipsub|^(PeerSession|PeerStats|TopicStats)$'),
 # A HashSet<PeerId> is its own owner (its type names Potluck's PeerId), so the sets other objects hold land here, not with
 # the peer store: at 200 nodes most are gossip's per-message delivery records (PeerScore), the rest meshes and topic peers.
 ('sets of peer ids (gossip delivery records, meshes)', r'^(System\.Collections\.Generic\.HashSet<Potluck\.Protocol\.Identity\.PeerId>|Entry<Potluck\.Protocol\.Identity\.PeerId>\[\])$'),
 ('peer store, keys, addresses', r'PeerStore|Potluck\.Protocol\.Identity|Multiaddr|^AddressEntry$|PeerBudgets|^PeerState$'),
 ('kademlia', r'Kademlia'),
 ('timers', r'^VirtualTimer$|VirtualClock'),
 ('scheduler / node', r'Potluck\.(Scheduler|Node)'),
 ('DI, config, logging, metrics, sqlite', r'^Microsoft\.|^System\.Diagnostics\.Metrics'),
]

def group(owner):
    for name, rx in rules:
        if re.search(rx, owner): return name
    return 'other'

def load(f):
    """Bytes by group, and by (owner, object type) within each group."""
    cat = collections.Counter(); detail = collections.defaultdict(collections.Counter)
    for line in open(f):
        b, c, owner, typ = line.rstrip('\n').split('\t')
        key = group(owner)
        cat[key] += int(b); detail[key][(owner, typ)] += int(b)
    return cat, detail

if __name__ == '__main__':
    f, nodes, ends = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cat, detail = load(f)
    tot = sum(cat.values())
    print(f"total {tot/2**20:.1f} MiB = {tot/nodes/1024:.1f} KiB per node; {ends} connection ends ({ends/nodes:.1f} per node)")
    for k, b in cat.most_common():
        print(f"{k:45s} {b/nodes/1024:8.1f} KiB/node {b/ends:8.0f} B/end")
        if len(sys.argv) > 4:
            for (o, t), bb in detail[k].most_common(int(sys.argv[4])):
                print(f"      {bb/ends:7.0f} B/end  {o[:80]}  :: {t[:70]}")
