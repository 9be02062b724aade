using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Yamux;

/// <summary>
/// The yamux stream multiplexer, <c>/yamux/1.0.0</c>, as specified by HashiCorp
/// (https://github.com/hashicorp/yamux/blob/master/spec.md) and used by libp2p
/// (see also https://github.com/libp2p/specs/tree/master/yamux).
/// The dialler (initiator) opens odd stream ids, the listener even ones; every stream starts with a
/// 256 KiB window in each direction.
/// <para>Choices and deviations:</para>
/// <list type="bullet">
/// <item>Receive windows auto-tune as in go-yamux: when a window is consumed within 4 RTTs it doubles, up to
/// <see cref="YamuxOptions.MaxStreamWindow"/>. The RTT comes from a ping sent when the session starts.</item>
/// <item>A data frame may be as long as the window granted (js-libp2p sends whole-window frames); longer is
/// a protocol violation that ends the connection with GoAway(protocol error). Payloads are streamed into the
/// stream, never buffered whole.</item>
/// <item><c>OpenStreamAsync</c> does not wait for the remote's ACK, unless <see cref="YamuxOptions.MaxAckBacklog"/>
/// (256, the libp2p spec's ACK backlog) of ours are unacknowledged. An inbound stream is ACKed when the
/// application accepts it (as go-yamux does, not on its first write as the libp2p notes suggest); past
/// <see cref="YamuxOptions.MaxInboundStreams"/> or <see cref="YamuxOptions.AcceptBacklog"/>, or after our
/// GoAway, a SYN is answered with RST.</item>
/// <item>Memory is reserved for what a remote can make us hold, not for windows at open (go-yamux reserves each
/// stream's initial 256 KiB when it opens): an idle stream reserves nothing; a window grown beyond 256 KiB is reserved
/// whole before it is granted (refused: not grown); bytes buffered and not yet read are reserved as they arrive, beyond
/// <see cref="YamuxOptions.FreeReceiveBuffer"/> per connection (refused: that stream is reset). See
/// <see cref="YamuxSession"/>.</item>
/// <item>No keep-alive pings: liveness is libp2p ping's job. Ping replies beyond
/// <see cref="YamuxOptions.MaxPendingControlFrames"/> queued are dropped, as go-yamux drops them.</item>
/// <item>Disposing a stream half-closes it (FIN) and stops reading; data still arriving is dropped and its
/// window credited back so the remote can finish.</item>
/// </list>
/// </summary>
public sealed class YamuxMuxer : IStreamMuxer
{
    /// <summary>The multistream-select protocol id.</summary>
    public const string ProtocolId = "/yamux/1.0.0";

    private readonly YamuxOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<YamuxConnection> _logger;

    private readonly MemoryBudget? _budget;

    /// <param name="budget">Shared by every connection of a host: grown windows and buffered bytes are reserved from it (the resource manager's memory scope).</param>
    public YamuxMuxer(YamuxOptions options, NodeRuntime runtime, ILoggerFactory loggers, MemoryBudget? budget = null)
    {
        _budget = budget;
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(loggers);
        options.Validate();
        _options = options;
        _runtime = runtime;
        _logger = loggers.CreateLogger<YamuxConnection>();
    }

    string IStreamMuxer.ProtocolId => ProtocolId;

    IMuxedConnection IStreamMuxer.Create(IDuplexPipe secured, bool initiator) => Create(secured, initiator);

    IMuxedConnection IStreamMuxer.Create(IDuplexPipe secured, bool initiator, IMemoryScope? memory) => Create(secured, initiator, memory);

    /// <summary>
    /// Starts a session over <paramref name="secured"/>, which it owns from now on (and disposes when it can). Its
    /// receive windows are reserved from <paramref name="memory"/> (the host's scopes for this connection's peer and
    /// address), else from the budget the muxer was made with.
    /// </summary>
    public YamuxConnection Create(IDuplexPipe secured, bool initiator, IMemoryScope? memory = null)
    {
        ArgumentNullException.ThrowIfNull(secured);
        return new YamuxConnection(secured, initiator, _options, _logger, _runtime, memory ?? _budget);
    }
}
