using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Topics;

/// <summary>What a topic validator decides about one message, as gossipsub's validation results.</summary>
public enum TopicVerdict
{
    /// <summary>Deliver and forward.</summary>
    Accept,
    /// <summary>Invalid: drop, and penalise the peer that sent it.</summary>
    Reject,
    /// <summary>Drop without penalty (stale, uninteresting).</summary>
    Ignore,
}

/// <summary>One message heard on a topic.</summary>
/// <param name="Topic">The topic.</param>
/// <param name="Data">The payload.</param>
/// <param name="Author">The signing author when the bus authenticates one, else null.</param>
/// <param name="ReceivedFrom">The peer that passed it to us.</param>
public sealed record TopicMessage(string Topic, ReadOnlyMemory<byte> Data, PeerId? Author, PeerId ReceivedFrom);

/// <summary>
/// A topic validator that also hands over what it made of the message (its decoded, checked form), so the handler does
/// not decode it again: <paramref name="validated"/> is set when the verdict is <see cref="TopicVerdict.Accept"/>.
/// </summary>
public delegate TopicVerdict TopicValidator<TValidated>(TopicMessage message, out TValidated? validated) where TValidated : class;

/// <summary>
/// What a validator's object (<see cref="TopicValidator{TValidated}"/>) implements when its message must reach only peers
/// that speak a protocol: a message older nodes would refuse, forwarded and advertised to the others only (as
/// <see cref="ITopicBus.PublishAsync(string, ReadOnlyMemory{byte}, string?, CancellationToken)"/>'s audience).
/// </summary>
public interface ITopicAudience
{
    /// <summary>The protocol a peer's identify must list to be sent the message; null: every subscriber.</summary>
    string? Audience { get; }
}

/// <summary>
/// The publish/subscribe the scheduler needs from the network, and nothing more: gossipsub in a node
/// (<c>Potluck.Node.Compute.GossipTopicBus</c>), <see cref="InMemoryTopicHub"/> in tests. Messages published by a
/// node are not delivered back to it. The validator runs before delivery and forwarding and must be quick (no
/// I/O, no WASM); slow checks belong in the handler.
/// </summary>
public interface ITopicBus
{
    /// <summary>Publishes <paramref name="data"/> on <paramref name="topic"/>.</summary>
    ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct);

    /// <summary>
    /// Publishes <paramref name="data"/> on <paramref name="topic"/> for the subscribers whose identify lists
    /// <paramref name="audience"/> only (null: all): the others are neither sent it nor told of it, by this node or by any
    /// node that forwards it and reads it as restricted (<see cref="ITopicAudience"/>).
    /// </summary>
    ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, string? audience, CancellationToken ct);

    /// <summary>
    /// Joins <paramref name="topic"/>: every message is first checked by <paramref name="validator"/>, and those it
    /// accepts are handed to <paramref name="handler"/> with the object the validator gave for that very message (never
    /// another message's, never one it did not accept; an accepted message without one is dropped), one at a time, in
    /// arrival order. The object lives only as long as the message waits for its handler, within the bounded queue the
    /// bus keeps for the topic. Dispose to leave. One subscription per topic per bus.
    /// </summary>
    IDisposable Subscribe<TValidated>(string topic, TopicValidator<TValidated> validator, Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
        where TValidated : class;

    /// <summary>
    /// Joins <paramref name="topic"/>: every message is first checked by <paramref name="validator"/>, and those
    /// accepted are handed to <paramref name="handler"/>, one at a time, in arrival order. Dispose to leave.
    /// One subscription per topic per bus.
    /// </summary>
    IDisposable Subscribe(string topic, Func<TopicMessage, TopicVerdict> validator, Func<TopicMessage, CancellationToken, ValueTask> handler) =>
        Subscribe(topic, (TopicMessage m, out TopicMessage? validated) =>
        {
            validated = m;
            return validator(m);
        }, (m, _, ct) => handler(m, ct));
}
