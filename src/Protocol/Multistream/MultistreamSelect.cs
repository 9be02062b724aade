using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Multistream;

/// <summary>
/// multistream-select 1.0 (https://github.com/multiformats/multistream-select, and the negotiation section of
/// https://github.com/libp2p/specs/blob/master/connections/README.md): agrees on one protocol over a fresh
/// connection or stream. Works directly on the <see cref="IDuplexPipe"/>: it consumes exactly the negotiation
/// messages, so whatever the remote sent after them (a lazy dialer's first data, a Noise handshake message)
/// stays buffered in the <see cref="PipeReader"/> for the next layer.
/// <para>
/// The dialer pipelines the header and its first proposal in one flush (as js-libp2p and go-multistream do);
/// the listener queues its header and sends it with its first answer, or before it would wait for data.
/// Deviations: no simultaneous-open extension (<c>/libp2p/simultaneous-connect</c>), and the dialer never sends
/// <c>ls</c> (the listener does answer it).
/// </para>
/// </summary>
public static class MultistreamSelect
{
    /// <summary>The header both sides send first.</summary>
    public const string ProtocolId = "/multistream/1.0.0";

    /// <summary>The listener's answer to a protocol it does not support.</summary>
    public const string NotAvailable = "na";

    /// <summary>A dialer's request for the listener's protocol list.</summary>
    public const string List = "ls";

    internal const string Name = "multistream-select";

    /// <summary>
    /// Dialer: proposes <paramref name="protocols"/> in order until the listener accepts one, and returns it.
    /// Throws <see cref="ProtocolNotSupportedException"/> when the listener answers <c>na</c> to all of them,
    /// <see cref="PeerGoneException"/> when the stream ends between two messages, and
    /// <see cref="ProtocolViolationException"/> on malformed or unexpected messages or a stream that ends inside one.
    /// </summary>
    public static async ValueTask<string> SelectAsync(
        IDuplexPipe pipe, IReadOnlyList<string> protocols, MultistreamOptions options, CancellationToken ct)
    {
        var negotiation = await TrySelectAsync(pipe, protocols, options, ct);
        return negotiation.Protocol ?? throw negotiation.ToException();
    }

    /// <summary>
    /// <see cref="SelectAsync"/> with the expected outcomes as a result instead of an exception: the agreed protocol, or
    /// the listener's <c>na</c> to every proposal (<see cref="FailureKind.Unsupported"/>), or a stream that ended
    /// between two messages (<see cref="FailureKind.PeerGone"/>). Frequent in a mesh (a peer that is no provider, a
    /// connection trimmed meanwhile) and not worth an exception each. Malformed or unexpected messages still throw
    /// <see cref="ProtocolViolationException"/>, a reset stream its <see cref="StreamResetException"/>, cancellation
    /// <see cref="OperationCanceledException"/>.
    /// </summary>
    public static async ValueTask<Negotiation> TrySelectAsync(
        IDuplexPipe pipe, IReadOnlyList<string> protocols, MultistreamOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        ArgumentNullException.ThrowIfNull(protocols);
        ArgumentNullException.ThrowIfNull(options);
        if (protocols.Count == 0)
        {
            throw new ArgumentException("at least one protocol must be proposed", nameof(protocols));
        }
        foreach (var p in protocols)
        {
            MultistreamMessage.ValidateProtocolId(p, options.MaxMessageLength, nameof(protocols));
        }

        var output = pipe.Output;
        MultistreamMessage.Write(output, ProtocolId);
        MultistreamMessage.Write(output, protocols[0]);
        await output.FlushAsync(ct);

        var header = await ReadMessageAsync(pipe.Input, null, options, ct);
        if (header is null)
        {
            return Negotiation.Ended(protocols, pipe.Input);
        }
        CheckHeader(header);
        for (var i = 0; ; i++)
        {
            var answer = await ReadMessageAsync(pipe.Input, null, options, ct);
            if (answer is null)
            {
                return Negotiation.Ended(protocols, pipe.Input);
            }
            if (answer == protocols[i])
            {
                return Negotiation.Agreed(protocols[i]); // the caller's string, not the copy read off the wire
            }
            if (answer != NotAvailable)
            {
                throw Violation($"the listener answered proposal #{i + 1} with an unexpected message ({Describe(answer)})", ViolationCode.UnexpectedMessage);
            }
            if (i + 1 == protocols.Count)
            {
                return Negotiation.NotSupported(protocols);
            }
            MultistreamMessage.Write(output, protocols[i + 1]);
            await output.FlushAsync(ct);
        }
    }

    /// <summary>
    /// Lazy dialer for a single protocol: writes the header and the proposal, flushes, and returns at once without
    /// waiting for the listener. The returned pipe's <see cref="IDuplexPipe.Output"/> is the original one, so the
    /// caller's first data follows the proposal with no round trip; its <see cref="IDuplexPipe.Input"/> checks the
    /// listener's header and echo on the first read, throwing <see cref="ProtocolNotSupportedException"/> on
    /// <c>na</c> and <see cref="ProtocolViolationException"/> on anything else unexpected.
    /// Use it only when the listener is known to support <paramref name="protocol"/>: after an <c>na</c> the
    /// listener reads the data already sent as further proposals, so the connection is lost.
    /// </summary>
    public static async ValueTask<IDuplexPipe> SelectOneLazyAsync(
        IDuplexPipe pipe, string protocol, MultistreamOptions options, CancellationToken ct)
    {
        var selected = SelectOneLazy(pipe, protocol, options);
        await pipe.Output.FlushAsync(ct);
        return selected;
    }

    /// <summary>
    /// <see cref="SelectOneLazyAsync"/> without the flush: the header and the proposal wait in
    /// <paramref name="pipe"/>'s output for the caller's first flush, so they leave in one write with its first data
    /// (the connection upgrade sends them with the first Noise message). Same caveat: after an <c>na</c> the
    /// connection is lost, which for the only security protocol a node offers is a failed dial either way.
    /// </summary>
    internal static IDuplexPipe SelectOneLazy(IDuplexPipe pipe, string protocol, MultistreamOptions options)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        ArgumentNullException.ThrowIfNull(options);
        MultistreamMessage.ValidateProtocolId(protocol, options.MaxMessageLength, nameof(protocol));
        MultistreamMessage.Write(pipe.Output, ProtocolId);
        MultistreamMessage.Write(pipe.Output, protocol);
        return new LazyNegotiatedPipe(new LazyNegotiationReader(pipe.Input, protocol, options), pipe.Output);
    }

    /// <summary>
    /// Listener for the connection upgrade: as <see cref="HandleAsync(IDuplexPipe, Func{string, bool}, MultistreamOptions, CancellationToken)"/>,
    /// except that the echo of the accepted proposal is left unflushed when the dialer has already sent data after
    /// its proposal (a lazy dialer, which does not wait for the echo): it then leaves with the caller's first answer.
    /// A dialer that waits for the echo sends nothing after its proposal, so the echo is flushed for it at once.
    /// </summary>
    internal static async ValueTask<string> HandleDeferringEchoAsync(
        IDuplexPipe pipe, Func<string, bool> isSupported, MultistreamOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(isSupported);
        var negotiation = await HandleCoreAsync(pipe, isSupported, [], options, ct, deferEcho: true);
        return negotiation.Protocol ?? throw negotiation.ToException();
    }

    /// <summary>
    /// Listener: answers the header, answers <c>na</c> to each proposal <paramref name="isSupported"/> rejects, and
    /// returns the first one it accepts after echoing it. An <c>ls</c> request is answered with an empty list (use
    /// the overload taking a list to advertise protocols). Bytes the dialer sent after its accepted proposal are
    /// left in <see cref="IDuplexPipe.Input"/>. Throws <see cref="PeerGoneException"/> when the dialer ends the stream
    /// between two messages (as a dialer does after <c>na</c>), <see cref="ProtocolViolationException"/> on bad messages.
    /// </summary>
    public static async ValueTask<string> HandleAsync(
        IDuplexPipe pipe, Func<string, bool> isSupported, MultistreamOptions options, CancellationToken ct)
    {
        var negotiation = await TryHandleAsync(pipe, isSupported, options, ct);
        return negotiation.Protocol ?? throw negotiation.ToException();
    }

    /// <summary>
    /// <see cref="HandleAsync(IDuplexPipe, Func{string, bool}, MultistreamOptions, CancellationToken)"/> with the dialer
    /// ending the stream between two messages (<see cref="FailureKind.PeerGone"/>) as a result instead of an exception.
    /// </summary>
    public static ValueTask<Negotiation> TryHandleAsync(
        IDuplexPipe pipe, Func<string, bool> isSupported, MultistreamOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(isSupported);
        return HandleCoreAsync(pipe, isSupported, [], options, ct);
    }

    /// <summary>
    /// Listener over a fixed list: as the other overload, accepting exactly the ids in <paramref name="supported"/>
    /// (ordinal comparison) and answering <c>ls</c> with that list.
    /// </summary>
    public static async ValueTask<string> HandleAsync(
        IDuplexPipe pipe, IReadOnlyList<string> supported, MultistreamOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(supported);
        var negotiation = await HandleCoreAsync(pipe, p => Contains(supported, p), supported, options, ct);
        return negotiation.Protocol ?? throw negotiation.ToException();
    }

    private static async ValueTask<Negotiation> HandleCoreAsync(
        IDuplexPipe pipe, Func<string, bool> isSupported, IReadOnlyList<string> advertised,
        MultistreamOptions options, CancellationToken ct, bool deferEcho = false)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        ArgumentNullException.ThrowIfNull(options);

        var output = pipe.Output;
        // Queued, not flushed: it leaves with the first answer, or before we would wait for the dialer.
        MultistreamMessage.Write(output, ProtocolId);
        var header = await ReadMessageAsync(pipe.Input, output, options, ct);
        if (header is null)
        {
            return Negotiation.Ended([], pipe.Input);
        }
        CheckHeader(header);

        for (var i = 0; i < options.MaxProposals; i++)
        {
            var proposal = await ReadMessageAsync(pipe.Input, output, options, ct);
            if (proposal is null)
            {
                return Negotiation.Ended([], pipe.Input);
            }
            if (proposal == List)
            {
                MultistreamMessage.WriteProtocolList(output, advertised);
                continue;
            }
            if (isSupported(proposal))
            {
                MultistreamMessage.Write(output, proposal);
                if (!deferEcho || !HasBufferedData(pipe.Input))
                {
                    await output.FlushAsync(ct);
                }
                return Negotiation.Agreed(proposal);
            }
            MultistreamMessage.Write(output, NotAvailable);
        }
        await output.FlushAsync(ct);
        throw Violation($"the dialer made more than {options.MaxProposals} proposals", ViolationCode.TooLarge);
    }

    /// <summary>True when bytes the dialer sent after the messages read so far are already here; consumes nothing.</summary>
    private static bool HasBufferedData(PipeReader input)
    {
        if (!input.TryRead(out var result))
        {
            return false;
        }
        var any = !result.Buffer.IsEmpty;
        input.AdvanceTo(result.Buffer.Start, result.Buffer.Start);
        return any;
    }

    /// <summary>
    /// Reads one message; null when the stream ended between two messages. When <paramref name="flushBeforeWaiting"/> is
    /// set, a message already buffered is taken without flushing it; otherwise it is flushed before waiting, so queued
    /// answers never wait on the remote.
    /// </summary>
    private static async ValueTask<string?> ReadMessageAsync(
        PipeReader input, PipeWriter? flushBeforeWaiting, MultistreamOptions options, CancellationToken ct)
    {
        // A muxed stream's input can hand over a reset or a closed connection as a value (null here; the caller looks
        // at Failure): negotiations on streams of a trimmed connection are frequent in a mesh.
        var failing = input as IFailureAsValueReader;
        if (flushBeforeWaiting is not null)
        {
            if (failing?.Failure is not null)
            {
                return null;
            }
            if (input.TryRead(out var buffered) && TryTake(input, buffered, options, out var message))
            {
                return message;
            }
            await flushBeforeWaiting.FlushAsync(ct);
        }
        while (true)
        {
            var result = failing is null ? await input.ReadAsync(ct) : await failing.ReadOrFailureAsync(ct);
            if (result.IsCompleted && failing?.Failure is not null)
            {
                input.AdvanceTo(result.Buffer.End);
                return null;
            }
            if (TryTake(input, result, options, out var message))
            {
                return message;
            }
        }
    }

    /// <summary>
    /// Takes one message from <paramref name="result"/> and always calls AdvanceTo: true with the message, or with null
    /// when the stream ended between messages; throws when the bytes can never become one.
    /// </summary>
    private static bool TryTake(PipeReader input, ReadResult result, MultistreamOptions options, out string? message)
    {
        var buffer = result.Buffer;
        var reader = new SequenceReader<byte>(buffer);
        var status = MultistreamMessage.TryRead(ref reader, options.MaxMessageLength, out var text, out var error);
        if (status == DecodeStatus.Done)
        {
            input.AdvanceTo(reader.Position);
            message = text!;
            return true;
        }
        input.AdvanceTo(buffer.Start, buffer.End);
        if (status == DecodeStatus.Invalid)
        {
            throw Violation(error!);
        }
        if (result.IsCompleted)
        {
            // Hanging up between messages is going away (a result); hanging up inside one is a truncated message.
            if (!buffer.IsEmpty)
            {
                throw Violation("the stream ended inside a message");
            }
            message = null;
            return true;
        }
        if (result.IsCanceled)
        {
            throw new OperationCanceledException("the read was cancelled during multistream-select");
        }
        message = "";
        return false;
    }

    internal static void CheckHeader(string header)
    {
        if (header != ProtocolId)
        {
            throw Violation($"expected the header {ProtocolId}, got {Describe(header)}", ViolationCode.UnexpectedMessage);
        }
    }

    /// <summary>
    /// A broken negotiation. Its radius is the stream: on a muxed stream only that stream is reset; during a
    /// connection's upgrade the failed upgrade drops the connection anyway.
    /// </summary>
    internal static ProtocolViolationException Violation(string reason, ViolationCode code = ViolationCode.Malformed) => new(Name, reason, code);

    /// <summary>A remote-chosen string made safe for an exception message: printable ASCII, at most 64 characters.</summary>
    internal static string Describe(string remote)
    {
        const int Max = 64;
        var shown = remote.Length > Max ? remote[..Max] : remote;
        var chars = shown.Select(c => c is >= ' ' and <= '~' ? c : '?').ToArray();
        return $"\"{new string(chars)}\"{(remote.Length > Max ? $" ({remote.Length} chars)" : "")}";
    }

    private static bool Contains(IReadOnlyList<string> list, string value)
    {
        for (var i = 0; i < list.Count; i++)
        {
            if (string.Equals(list[i], value, StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    private sealed class LazyNegotiatedPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
