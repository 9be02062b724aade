namespace Potluck.Protocol.Relay;

/// <summary>
/// Settings of circuit relay v2 (https://github.com/libp2p/specs/blob/master/relay/circuit-v2.md). The hop side
/// (<see cref="RelayService"/>) bounds what strangers can make this node carry; the client side
/// (<see cref="CircuitTransport"/>) bounds what a relay can send us. Defaults follow go-libp2p's relay resources
/// (128 reservations, 8 per IP, 1 h TTL, 16 circuits, 2 min and 128 KiB per direction per relayed connection).
/// </summary>
public sealed record RelayOptions
{
    /// <summary>Serve <c>/libp2p/circuit/relay/0.2.0/hop</c> (act as a relay). Default false.</summary>
    public bool Hop { get; init; }

    /// <summary>Accept relayed connections: listen on <c>/p2p-circuit</c> (from relays we reserved on). Default false.</summary>
    public bool AcceptRelayed { get; init; }

    /// <summary>
    /// Serve hop automatically while AutoNAT finds this node publicly reachable (as go-libp2p does), within these
    /// limits; stop when it no longer is. Default true.
    /// </summary>
    public bool AutoHop { get; init; } = true;

    /// <summary>
    /// While AutoNAT finds this node unreachable, reserve on relays it knows (bootstrap peers, a private cluster's
    /// members, peers that serve hop), keep the reservations fresh and advertise the <c>/p2p-circuit</c> addresses.
    /// Listens on <c>/p2p-circuit</c> (accepting only from relays it reserved on). Default true.
    /// </summary>
    public bool AutoReserve { get; init; } = true;

    /// <summary>Reservations held at once by <see cref="AutoReserve"/>. Default 2.</summary>
    public int MaxAutoReservations { get; init; } = 2;

    /// <summary>
    /// Per-direction data limit of a relayed connection to a peer that serves Potluck leases (task modules and inputs
    /// are larger than the 128 KiB of <see cref="ConnectionData"/>). Default 64 MiB.
    /// </summary>
    public long LeaseConnectionData { get; init; } = 64L * 1024 * 1024;

    /// <summary>Time limit of a relayed connection to a peer that serves Potluck leases. Default 10 min.</summary>
    public TimeSpan LeaseConnectionDuration { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Reservations held at once; over this a RESERVE is answered RESERVATION_REFUSED. Default 128.</summary>
    public int MaxReservations { get; init; } = 128;

    /// <summary>Reservations held at once by peers connected from one IP (or one in-memory address). Default 8.</summary>
    public int MaxReservationsPerIp { get; init; } = 8;

    /// <summary>How long a reservation lasts before it must be refreshed. Default 1 h.</summary>
    public TimeSpan ReservationTtl { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Relayed connections open at once; over this a CONNECT is answered RESOURCE_LIMIT_EXCEEDED. Default 16.</summary>
    public int MaxCircuits { get; init; } = 16;

    /// <summary>Relayed connections open at once with one peer at either end. Default 4.</summary>
    public int MaxCircuitsPerPeer { get; init; } = 4;

    /// <summary>A relayed connection is reset after this long. Default 2 min.</summary>
    public TimeSpan ConnectionDuration { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>A relayed connection is reset once this many bytes went in either direction. Default 128 KiB.</summary>
    public long ConnectionData { get; init; } = 128 * 1024;

    /// <summary>Largest hop or stop message read. Default 4 KiB.</summary>
    public int MaxMessageSize { get; init; } = 4096;

    /// <summary>A hop or stop exchange (request, answer) must finish within this. Default 30 s.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Relays to hold a reservation on from the start (each a full address ending in /p2p/&lt;relay&gt;), kept refreshed
    /// while the node runs: go-libp2p's static relays. Needs <see cref="AcceptRelayed"/>. Default none.
    /// </summary>
    public IReadOnlyList<Potluck.Protocol.Multiformats.Multiaddr> StaticRelays { get; init; } = [];

    /// <summary>Accept STOP (incoming relayed connections) only from relays we hold a reservation on. Default true.</summary>
    public bool StopOnlyFromReservedRelays { get; init; } = true;

    /// <summary>What is wrong with these settings, one line per key ('relay:maxReservations' is 0; …); empty when valid.</summary>
    public IReadOnlyList<string> Validate(string prefix = "relay")
    {
        var problems = new List<string>();
        string Key(string name) => $"'{prefix}:{char.ToLowerInvariant(name[0])}{name[1..]}'";
        void Positive(string key, double value)
        {
            if (value <= 0)
            {
                problems.Add($"{Key(key)} is {value}; it must be greater than 0");
            }
        }
        Positive(nameof(MaxReservations), MaxReservations);
        Positive(nameof(MaxReservationsPerIp), MaxReservationsPerIp);
        Positive(nameof(ReservationTtl), ReservationTtl.TotalSeconds);
        Positive(nameof(MaxCircuits), MaxCircuits);
        Positive(nameof(MaxCircuitsPerPeer), MaxCircuitsPerPeer);
        Positive(nameof(ConnectionDuration), ConnectionDuration.TotalSeconds);
        Positive(nameof(ConnectionData), ConnectionData);
        Positive(nameof(HandshakeTimeout), HandshakeTimeout.TotalSeconds);
        Positive(nameof(MaxAutoReservations), MaxAutoReservations);
        Positive(nameof(LeaseConnectionData), LeaseConnectionData);
        Positive(nameof(LeaseConnectionDuration), LeaseConnectionDuration.TotalSeconds);
        if (LeaseConnectionDuration.TotalSeconds > uint.MaxValue)
        {
            problems.Add($"{Key(nameof(LeaseConnectionDuration))} is {LeaseConnectionDuration}; it must be under 136 years (32-bit seconds)");
        }
        if (MaxMessageSize < 512 || MaxMessageSize > 1 << 20)
        {
            problems.Add($"{Key(nameof(MaxMessageSize))} is {MaxMessageSize}; it must be between 512 and 1048576 bytes");
        }
        for (var i = 0; i < StaticRelays.Count; i++)
        {
            if (StaticRelays[i].PeerId is null || StaticRelays[i].Find(Potluck.Protocol.Multiformats.Multiaddr.P2pCircuit) is not null)
            {
                problems.Add($"'{prefix}:staticRelays:{i}' is {StaticRelays[i]}; it must be a relay's direct address ending in /p2p/<peer id>");
            }
        }
        if (StaticRelays.Count > 0 && !AcceptRelayed)
        {
            problems.Add($"'{prefix}:staticRelays' needs '{prefix}:acceptRelayed' true (a reservation is for receiving relayed connections)");
        }
        if (ConnectionDuration.TotalSeconds > uint.MaxValue)
        {
            problems.Add($"{Key(nameof(ConnectionDuration))} is {ConnectionDuration}; it must be under 136 years (32-bit seconds)");
        }
        return problems;
    }
}

/// <summary>Circuit relay v2 status codes as the spec numbers them.</summary>
public enum RelayStatus
{
    Unused = 0,
    Ok = 100,
    ReservationRefused = 200,
    ResourceLimitExceeded = 201,
    PermissionDenied = 202,
    ConnectionFailed = 203,
    NoReservation = 204,
    MalformedMessage = 400,
    UnexpectedMessage = 401,
}

/// <summary>The spec's names of <see cref="RelayStatus"/> values (NO_RESERVATION, …), as messages and other implementations show them.</summary>
public static class RelayStatusNames
{
    public static string Of(RelayStatus status) => status switch
    {
        RelayStatus.Ok => "OK",
        RelayStatus.ReservationRefused => "RESERVATION_REFUSED",
        RelayStatus.ResourceLimitExceeded => "RESOURCE_LIMIT_EXCEEDED",
        RelayStatus.PermissionDenied => "PERMISSION_DENIED",
        RelayStatus.ConnectionFailed => "CONNECTION_FAILED",
        RelayStatus.NoReservation => "NO_RESERVATION",
        RelayStatus.MalformedMessage => "MALFORMED_MESSAGE",
        RelayStatus.UnexpectedMessage => "UNEXPECTED_MESSAGE",
        _ => $"status {(int)status}",
    };
}

/// <summary>A relay answered a RESERVE or CONNECT with a refusal; <see cref="Status"/> says which.</summary>
public sealed class RelayRefusedException(RelayStatus status, string message) : IOException(message)
{
    public RelayStatus Status { get; } = status;
}
