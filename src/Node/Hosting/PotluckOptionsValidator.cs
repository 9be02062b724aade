using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Hosting;

/// <summary>The checks <see cref="PotluckOptionsResolver"/> runs at start; each message names the key and what would be right.</summary>
public static class PotluckOptionsValidator
{
    public static IReadOnlyList<string> Validate(PotluckOptions o)
    {
        var problems = new List<string>();
        void Need(bool ok, string message)
        {
            if (!ok)
            {
                problems.Add(message);
            }
        }
        void Positive(TimeSpan value, string key) => Need(value > TimeSpan.Zero, $"'{key}' is {value}; it must be a positive duration such as 00:00:30");
        void AtLeast(long value, long min, string key) => Need(value >= min, $"'{key}' is {value}; it must be at least {min}");

        problems.AddRange(o.Relay.Validate("relay"));
        problems.AddRange(o.Dcutr.Validate("dcutr"));
        problems.AddRange(o.AutoNat.Validate("autoNat"));
        problems.AddRange(o.Compute.Accounting.Recovery.Validate("compute:accounting:recovery"));
        problems.AddRange(o.Compute.Accounting.History.Validate("compute:accounting:history"));
        Need(!o.Relay.AcceptRelayed || o.Protocols.Relay, "'relay:acceptRelayed' needs 'protocols:relay' on");
        for (var i = 0; i < o.Listen.Count; i++)
        {
            Need(o.Listen[i].PeerId is null, $"'listen:{i}' is {o.Listen[i]}; a listen address has no /p2p/ part (the node adds its own)");
        }
        for (var i = 0; i < o.Bootstrap.Count; i++)
        {
            Need(o.Bootstrap[i].PeerId is not null,
                $"'bootstrap:{i}' is {o.Bootstrap[i]}; it needs the peer id at the end: {o.Bootstrap[i]}/p2p/12D3KooW… (potluck run prints it as 'Listening on …')");
        }
        for (var i = 0; i < o.Topics.Count; i++)
        {
            Need(!string.IsNullOrWhiteSpace(o.Topics[i]) && o.Topics[i].Length <= o.Gossip.MaxTopicLength,
                $"'topics:{i}' must be a topic name of 1 to {o.Gossip.MaxTopicLength} characters");
        }
        Need(o.DataDir is null || Path.IsPathRooted(o.DataDir), $"'dataDir' is '{o.DataDir}'; it must be an absolute path");

        var d = o.Discovery;
        Positive(d.RebootstrapInterval, "discovery:rebootstrapInterval");
        Positive(d.JoinRetryDelay, "discovery:joinRetryDelay");
        Need(d.JoinRetries is >= 0 and <= 20, $"'discovery:joinRetries' is {d.JoinRetries}; it must be 0 to 20");
        Positive(d.SaveInterval, "discovery:saveInterval");
        AtLeast(d.MaxRedialPeers, 0, "discovery:maxRedialPeers");
        AtLeast(d.MaxPersistedPeers, 0, "discovery:maxPersistedPeers");
        AtLeast(d.MaxPersistedAddressesPerPeer, 1, "discovery:maxPersistedAddressesPerPeer");
        AtLeast(d.MaxPersistedTopics, 0, "discovery:maxPersistedTopics");

        var h = o.Host;
        AtLeast(h.MaxConnections, 1, "host:maxConnections");
        AtLeast(h.MaxPendingInbound, 1, "host:maxPendingInbound");
        Positive(h.DialTimeout, "host:dialTimeout");
        Positive(h.HandshakeTimeout, "host:handshakeTimeout");
        Positive(h.StreamNegotiationTimeout, "host:streamNegotiationTimeout");
        Need(h.HighWater == 0 || (h.LowWater >= 0 && h.LowWater <= h.HighWater && h.HighWater <= h.MaxConnections),
            $"'host:lowWater' ≤ 'host:highWater' ≤ 'host:maxConnections' must hold (now {h.LowWater}, {h.HighWater}, {h.MaxConnections}); 'host:highWater' 0 turns trimming off");
        Positive(h.IdleConnectionTimeout, "host:idleConnectionTimeout");
        AtLeast(h.IdleTrimFloor, 0, "host:idleTrimFloor");
        AtLeast(h.PeerStore.MaxPeers, 1, "host:peerStore:maxPeers");
        AtLeast(h.PeerStore.MaxAddressesPerPeer, 1, "host:peerStore:maxAddressesPerPeer");
        Need(h.PeerStore.RecentlyConnectedAddressTtl >= TimeSpan.Zero, $"'host:peerStore:recentlyConnectedAddressTtl' is {h.PeerStore.RecentlyConnectedAddressTtl}; it must be zero or a positive duration such as 00:10:00");
        Need(h.PeerStore.DiscoveredAddressTtl >= TimeSpan.Zero, $"'host:peerStore:discoveredAddressTtl' is {h.PeerStore.DiscoveredAddressTtl}; it must be zero or a positive duration such as 00:10:00");
        Need(h.PeerStore.LookupAddressTtl >= TimeSpan.Zero, $"'host:peerStore:lookupAddressTtl' is {h.PeerStore.LookupAddressTtl}; it must be zero or a positive duration such as 00:02:00");
        Need(h.PeerStore.PeerExchangeAddressTtl >= TimeSpan.Zero, $"'host:peerStore:peerExchangeAddressTtl' is {h.PeerStore.PeerExchangeAddressTtl}; it must be zero or a positive duration such as 00:02:00");
        AtLeast(h.Budgets.MaxTrackedPeers, 1, "host:budgets:maxTrackedPeers");
        var r = h.Resources;
        AtLeast(r.MaxConnectionsPerPeer, 1, "host:resources:maxConnectionsPerPeer");
        AtLeast(r.MaxConnectionsPerAddress, 1, "host:resources:maxConnectionsPerAddress");
        AtLeast(r.MaxConnectionsPerSubnet, 1, "host:resources:maxConnectionsPerSubnet");
        AtLeast(r.MaxPendingInboundPerAddress, 1, "host:resources:maxPendingInboundPerAddress");
        AtLeast(r.MaxPendingInboundPerSubnet, 1, "host:resources:maxPendingInboundPerSubnet");
        AtLeast(r.MaxInboundStreamsPerPeer, 1, "host:resources:maxInboundStreamsPerPeer");
        AtLeast(r.MaxInboundStreamsPerProtocol, 1, "host:resources:maxInboundStreamsPerProtocol");
        AtLeast(r.MaxMuxerMemory, 256 * 1024, "host:resources:maxMuxerMemory");
        AtLeast(r.MaxMuxerMemoryPerPeer, 256 * 1024, "host:resources:maxMuxerMemoryPerPeer");
        AtLeast(r.MaxMuxerMemoryPerAddress, 256 * 1024, "host:resources:maxMuxerMemoryPerAddress");
        AtLeast(r.MaxMuxerMemoryPerSubnet, 256 * 1024, "host:resources:maxMuxerMemoryPerSubnet");
        AtLeast(o.Yamux.MaxConnectionMemory, 256 * 1024, "yamux:maxConnectionMemory");
        Need(o.Yamux.FreeReceiveBuffer >= 0 && o.Yamux.FreeReceiveBuffer <= o.Yamux.MaxConnectionMemory,
            $"'yamux:freeReceiveBuffer' is {o.Yamux.FreeReceiveBuffer}; it must be 0 to 'yamux:maxConnectionMemory' ({o.Yamux.MaxConnectionMemory})");
        Need(r.HandshakeEvictionAge >= TimeSpan.Zero, $"'host:resources:handshakeEvictionAge' is {r.HandshakeEvictionAge}; it must be zero or a positive duration such as 00:00:02");
        Need(!string.IsNullOrWhiteSpace(o.Identify.AgentVersion) && o.Identify.AgentVersion.Length <= 256, "'identify:agentVersion' must be 1 to 256 characters");

        var g = o.Gossip;
        Need(g.DLow <= g.D && g.D <= g.DHigh && g.DLow >= 1, $"'gossip:dLow' ≤ 'gossip:d' ≤ 'gossip:dHigh' must hold with dLow ≥ 1 (now {g.DLow}, {g.D}, {g.DHigh})");
        Positive(g.HeartbeatInterval, "gossip:heartbeatInterval");
        AtLeast(g.Score.MaxRetainedPeers, 0, "gossip:score:maxRetainedPeers");
        Need(g.Score.RetainScore >= TimeSpan.Zero, $"'gossip:score:retainScore' is {g.Score.RetainScore}; it must be zero or a positive duration such as 01:00:00");
        Need(g.Protocols.Count > 0 && g.Protocols.All(p => p is Protocol.Gossipsub.GossipsubProtocol.V12 or Protocol.Gossipsub.GossipsubProtocol.V11 or Protocol.Gossipsub.GossipsubProtocol.V10 or Protocol.Gossipsub.GossipsubProtocol.Floodsub),
            $"'gossip:protocols' must list one or more of {Protocol.Gossipsub.GossipsubProtocol.V12}, {Protocol.Gossipsub.GossipsubProtocol.V11}, {Protocol.Gossipsub.GossipsubProtocol.V10} and {Protocol.Gossipsub.GossipsubProtocol.Floodsub} (now {string.Join(", ", g.Protocols)})");

        var k = o.Kademlia;
        AtLeast(k.K, 1, "kademlia:k");
        AtLeast(k.Alpha, 1, "kademlia:alpha");
        Positive(k.RequestTimeout, "kademlia:requestTimeout");
        Positive(k.LookupTimeout, "kademlia:lookupTimeout");
        Need(k.JoinRefreshSpread >= TimeSpan.Zero && k.JoinRefreshSpread <= k.BucketRefreshInterval,
            $"'kademlia:joinRefreshSpread' is {k.JoinRefreshSpread}; it must be zero (all at once) to 'kademlia:bucketRefreshInterval' ({k.BucketRefreshInterval}), such as 00:05:00");
        Need(k.RedialBackoff >= TimeSpan.Zero, $"'kademlia:redialBackoff' is {k.RedialBackoff}; it must be zero (off) or a positive duration such as 00:00:30");

        var c = o.Compute;
        if (c.Enabled && !(o.Protocols.Gossipsub && o.Protocols.Identify))
        {
            problems.Add("'compute:enabled' needs 'protocols:gossipsub' and 'protocols:identify' (advertisements travel by gossip)");
        }
        if (o.Topics.Count > 0 && !o.Protocols.Gossipsub)
        {
            problems.Add("'topics' needs 'protocols:gossipsub'");
        }
        if (o.Bootstrap.Count > 0 && !o.Protocols.Kademlia)
        {
            problems.Add("'bootstrap' needs 'protocols:kademlia' (the DHT is bootstrapped through those peers)");
        }
        if (c.Enabled)
        {
            Need(o.DataDir is not null, "'compute:enabled' needs a data directory ('dataDir', or --data-dir) for the ledger and the module store");
        }
        var p = c.Provider;
        AtLeast(p.Cores, 1, "compute:provider:cores");
        AtLeast(p.PricePerMegaFuel, 0, "compute:provider:pricePerMegaFuel");
        AtLeast(p.MemoryBytes, 1 << 20, "compute:provider:memoryBytes");
        AtLeast(p.DiskBytes, 1 << 20, "compute:provider:diskBytes");
        AtLeast(p.MaxFuel, 1, "compute:provider:maxFuel");
        AtLeast(p.SpeedFuelPerSecond, 1, "compute:provider:speedFuelPerSecond");
        AtLeast(p.MaxQueuedReceipts, 1, "compute:provider:maxQueuedReceipts");
        Need(p.DeadlineSlack >= 1 && double.IsFinite(p.DeadlineSlack), $"'compute:provider:deadlineSlack' is {p.DeadlineSlack}; it must be at least 1");
        Positive(p.MinRunTime, "compute:provider:minRunTime");
        Need(p.StrangerCoreShare is >= 0 and <= 1, $"'compute:provider:strangerCoreShare' is {p.StrangerCoreShare}; it must be from 0 to 1");
        AtLeast(c.Client.MaxAttempts, 1, "compute:client:maxAttempts");
        Positive(c.Client.LeaseDeadline, "compute:client:leaseDeadline");
        Positive(c.Client.WaitForProviders, "compute:client:waitForProviders");
        Positive(c.Client.WaitForCapacity, "compute:client:waitForCapacity");
        Positive(c.Client.BusyRetryInterval, "compute:client:busyRetryInterval");
        var ads = c.Client.Advertising;
        AtLeast(ads.SampleSize, 1, "compute:client:advertising:sampleSize");
        AtLeast(ads.SampleMaxBytes, ads.MaxEnvelopeBytes, "compute:client:advertising:sampleMaxBytes");
        AtLeast(ads.SamplePeers, 0, "compute:client:advertising:samplePeers");
        Positive(ads.SampleWindow, "compute:client:advertising:sampleWindow");
        Positive(ads.UnreachableGrace, "compute:client:advertising:unreachableGrace");
        var issued = c.Provider.Advertising;
        Positive(issued.PublishInterval, "compute:provider:advertising:publishInterval");
        Need(issued.Lifetime > issued.PublishInterval && issued.Lifetime <= issued.MaxLifetime,
            $"'compute:provider:advertising:lifetime' is {issued.Lifetime}; it must be longer than the publish interval ({issued.PublishInterval}) and at most the longest lifetime accepted ({issued.MaxLifetime})");
        var s = c.Sandbox;
        AtLeast(s.MaxMemoryBytes, 65536, "compute:sandbox:maxMemoryBytes");
        Positive(s.DefaultDeadline, "compute:sandbox:defaultDeadline");
        Positive(s.EpochTick, "compute:sandbox:epochTick");
        AtLeast(s.ModuleCacheCapacity, 1, "compute:sandbox:moduleCacheCapacity");
        AtLeast(s.MaxWasmStackBytes, 16 * 1024, "compute:sandbox:maxWasmStackBytes");
        Need(s.InstanceSlots is >= 0 and <= Scheduler.Sandbox.SandboxOptions.MaxInstanceSlots,
            $"'compute:sandbox:instanceSlots' is {s.InstanceSlots}; it must be 0 (no pool: each run's memory mapped as it goes) to {Scheduler.Sandbox.SandboxOptions.MaxInstanceSlots}");
        AtLeast(c.Credits.InitialGrant, 0, "compute:credits:initialGrant");
        AtLeast(c.Credits.MaxDebt, 0, "compute:credits:maxDebt");
        problems.AddRange(TrustOptionsChecks.Validate(c.Accounting, c.Credits));
        problems.AddRange(DebitNoteOptionsChecks.Validate(c.Provider.Lease, c.Client.Lease));
        ValidatePreferences(o.Preferences, problems);
        Need(o.Control.Endpoint is not null,
            $"'control:listen' is '{o.Control.Listen}'; it must be a loopback address and port such as 127.0.0.1:4101 (the control API is for this machine only)");
        return problems;
    }

    /// <summary>The checks of the <c>preferences</c> section alone (also run by <c>potluck config set</c>).</summary>
    public static void ValidatePreferences(Home.PreferencesOptions p, List<string> problems)
    {
        void Need(bool ok, string message)
        {
            if (!ok)
            {
                problems.Add(message);
            }
        }
        Need(p.IdleCpuPercent is > 0 and <= 100, $"'preferences:idleCpuPercent' is {p.IdleCpuPercent}; it must be above 0 and at most 100");
        Need(p.CpuSharePercent is > 0 and <= 100, $"'preferences:cpuSharePercent' is {p.CpuSharePercent}; it must be above 0 and at most 100");
        Need(p.IdleFor >= TimeSpan.Zero, $"'preferences:idleFor' is {p.IdleFor}; it must not be negative");
        Need(p.Grace >= TimeSpan.Zero, $"'preferences:grace' is {p.Grace}; it must not be negative");
        Need(p.SampleInterval >= TimeSpan.FromMilliseconds(100), $"'preferences:sampleInterval' is {p.SampleInterval}; it must be at least 00:00:00.1");
        Need(Enum.IsDefined(p.OnOwnerReturn), $"'preferences:onOwnerReturn' is {p.OnOwnerReturn}; it must be cancel or finish");
        Home.Schedule.Parse(p.Hours, problems);
        for (var i = 0; i < p.AllowPeers.Count; i++)
        {
            Need(Protocol.Identity.PeerId.TryParse(p.AllowPeers[i], out _), $"'preferences:allowPeers:{i}' is '{p.AllowPeers[i]}', which is not a peer id (12D3KooW…)");
        }
        for (var i = 0; i < p.RefusePeers.Count; i++)
        {
            Need(Protocol.Identity.PeerId.TryParse(p.RefusePeers[i], out _), $"'preferences:refusePeers:{i}' is '{p.RefusePeers[i]}', which is not a peer id (12D3KooW…)");
        }
    }

    /// <summary>The number of cores this process may use (the runtime reads the cgroup's CPU quota and the affinity mask).</summary>
    public static int MachineCores => Environment.ProcessorCount;

    /// <summary>Checks a home node's offer against this machine: more cores than the machine (or its cgroup) has is refused.</summary>
    public static IReadOnlyList<string> ValidateForThisMachine(PotluckOptions o)
    {
        var problems = new List<string>();
        if (o.Compute.Enabled && o.Compute.Provide && o.Compute.Provider.Cores > MachineCores)
        {
            problems.Add($"'compute:provider:cores' is {o.Compute.Provider.Cores} but this machine lets the node use {MachineCores} " +
                         $"(cores, or its cgroup's CPU quota): offer at most {MachineCores}");
        }
        if (o.Compute.Enabled && o.Compute.Provide && o.Compute.Provider.MemoryBytes > MachineMemoryBytes)
        {
            problems.Add($"'compute:provider:memoryBytes' is {o.Compute.Provider.MemoryBytes} but this machine lets the node use {MachineMemoryBytes} " +
                         $"bytes (its memory, or its cgroup's memory.max): offer at most {MachineMemoryBytes}, e.g. half: {MachineMemoryBytes / 2}");
        }
        return problems;
    }

    /// <summary>The memory this process may use: the machine's, or less where a cgroup (container, systemd MemoryMax) caps it.</summary>
    public static long MachineMemoryBytes => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>The cores a home node offers when 'compute:provider:cores' is not set: its CPU share of this machine, at least one.</summary>
    public static int DefaultCores(double cpuSharePercent) => Math.Max(1, (int)Math.Floor(MachineCores * cpuSharePercent / 100));

    internal static bool HasPeer(Multiaddr address) => address.PeerId is not null;
}
