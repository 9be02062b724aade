using Graphs;
var dump = new GCHeapDump(args[0]);
var g = dump.MemoryGraph;
int n = (int)g.NodeIndexLimit;
var typeOf = new int[n]; var size = new int[n];
var parents = new List<int>[n];
var ns = g.AllocNodeStorage(); var ts = g.AllocTypeNodeStorage();
var names = new Dictionary<int,string>();
string TName(int t){ if(!names.TryGetValue(t,out var s)){ s=g.GetType((NodeTypeIndex)t, ts).Name; names[t]=s;} return s; }
for (int i = 0; i < n; i++) {
  var node = g.GetNode((NodeIndex)i, ns);
  typeOf[i] = (int)node.TypeIndex; size[i] = node.Size;
  for (var c = node.GetFirstChildIndex(); c != NodeIndex.Invalid; c = node.GetNextChildIndex()) {
    (parents[(int)c] ??= new List<int>(1)).Add(i);
  }
}
string mode = args[1];
if (mode == "refs") {
  string pat = args[2]; int depth = args.Length > 3 ? int.Parse(args[3]) : 1;
  var hist = new Dictionary<string,(long c,long b)>();
  for (int i = 0; i < n; i++) {
    if (!TName(typeOf[i]).Contains(pat)) continue;
    // path: follow first parent
    var path = new List<string>(); int cur = i;
    for (int d = 0; d < depth; d++) {
      var p = parents[cur];
      if (p == null || p.Count == 0) { path.Add("<root>"); break; }
      cur = p[0]; path.Add(TName(typeOf[cur]) + (p.Count > 1 ? $"(+{p.Count-1})" : ""));
    }
    var key = TName(typeOf[i]) + " <- " + string.Join(" <- ", path);
    hist.TryGetValue(key, out var v); hist[key] = (v.c + 1, v.b + size[i]);
  }
  Print(hist);
}
if (mode == "children") {
  string pat = args[2]; string skip = args.Length > 3 ? args[3] : "";
  var hist = new Dictionary<string,(long c,long b)>();
  for (int i = 0; i < n; i++) {
    if (!TName(typeOf[i]).Contains(pat)) continue;
    var node = g.GetNode((NodeIndex)i, ns);
    var kids = new List<string>();
    for (var c = node.GetFirstChildIndex(); c != NodeIndex.Invalid; c = node.GetNextChildIndex()) { var nm = TName(typeOf[(int)c]); if (!nm.Contains(skip)) kids.Add(nm); }
    kids.Sort();
    var key = TName(typeOf[i]) + " -> " + string.Join(", ", kids);
    hist.TryGetValue(key, out var v); hist[key] = (v.c + 1, v.b + size[i]);
  }
  Print(hist);
}
if (mode == "owner") {
  // objects whose type contains args[2] (and whose children types all match args[3] if given: "-" none): BFS up parents skipping types matching args[4] regex
  string pat = args[2]; string kidsOnly = args[3]; var skip = new System.Text.RegularExpressions.Regex(args[4]);
  var hist = new Dictionary<string,(long c,long b)>();
  for (int i = 0; i < n; i++) {
    if (!TName(typeOf[i]).Contains(pat)) continue;
    if (kidsOnly != "-") {
      var node = g.GetNode((NodeIndex)i, ns); bool ok = true;
      for (var c = node.GetFirstChildIndex(); c != NodeIndex.Invalid; c = node.GetNextChildIndex()) if (!System.Text.RegularExpressions.Regex.IsMatch(TName(typeOf[(int)c]), kidsOnly)) ok = false;
      if (!ok) continue;
    }
    var q = new Queue<(int,int)>(); var seen = new HashSet<int>{i}; q.Enqueue((i,0)); string found = "<none>";
    while (q.Count > 0) {
      var (cur, d) = q.Dequeue();
      if (cur != i && !skip.IsMatch(TName(typeOf[cur]))) { found = TName(typeOf[cur]); break; }
      if (d > 100000 || seen.Count > 200000) { found = "<deep>"; break; }
      if (parents[cur] != null) foreach (var p in parents[cur]) if (seen.Add(p)) q.Enqueue((p, d+1));
    }
    var key = TName(typeOf[i]) + " owned by " + found;
    hist.TryGetValue(key, out var v); hist[key] = (v.c + 1, v.b + size[i]);
  }
  Print(hist);
}
if (mode == "owners") {
  // every object: its own type if it names Potluck, else the nearest ancestor that does (BFS, capped)
  var ownerHist = new Dictionary<string,(long c,long b)>();
  var ownerCache = new int[n]; Array.Fill(ownerCache, -2);
  bool Anchor(int t) { var s = TName(t); return s.Contains("Potluck.") || s == "Admission" || s == "StreamReservation" || s == "ConnectionMemory" || s == "Piece" || s == "PeerSession" || s == "PeerState" || s == "PeerStats" || s == "TopicStats" || s == "AddressEntry" || s == "VirtualTimer" || s.StartsWith("Microsoft.Extensions") || s.StartsWith("Microsoft.Data.Sqlite") || s.StartsWith("System.Diagnostics.Metrics"); }
  long total = 0;
  for (int i = 0; i < n; i++) {
    if (size[i] == 0) continue;
    total += size[i];
    int owner = -1;
    if (Anchor(typeOf[i])) owner = i;
    else {
      var q = new Queue<int>(); var seen = new HashSet<int>{i}; q.Enqueue(i);
      while (q.Count > 0 && seen.Count < 3000) {
        var cur = q.Dequeue();
        if (cur != i && Anchor(typeOf[cur])) { owner = cur; break; }
        if (cur != i && ownerCache[cur] >= 0) { owner = ownerCache[cur]; break; }
        if (parents[cur] != null) foreach (var p in parents[cur]) if (seen.Add(p)) q.Enqueue(p);
      }
      ownerCache[i] = owner;
    }
    var key = (owner < 0 ? "<none>" : TName(typeOf[owner])) + "\t" + TName(typeOf[i]);
    ownerHist.TryGetValue(key, out var v); ownerHist[key] = (v.c + 1, v.b + size[i]);
  }
  using var w = new StreamWriter(args[2]);
  foreach (var kv in ownerHist.OrderByDescending(k => k.Value.b)) w.WriteLine($"{kv.Value.b}\t{kv.Value.c}\t{kv.Key}");
  Console.WriteLine($"total {total}");
}
void Print(Dictionary<string,(long c,long b)> hist) {
  foreach (var kv in hist.OrderByDescending(k => k.Value.b).Take(int.TryParse(Environment.GetEnvironmentVariable("TOP"), out var top) ? top : 40))
    Console.WriteLine($"{kv.Value.c,9} {kv.Value.b/1024.0,10:F1} KiB  {kv.Key}");
}
