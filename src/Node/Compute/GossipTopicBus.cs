using Microsoft.Extensions.Logging;
using Potluck.Protocol.Gossipsub;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Compute;

/// <summary>
/// <see cref="ITopicBus"/> over gossipsub: publishing is <see cref="GossipsubService.PublishAsync"/>, a subscription
/// sets the topic's validator and pumps its messages to the handler one at a time.
/// </summary>
public sealed partial class GossipTopicBus : ITopicBus
{
    private readonly GossipsubService _gossip;
    private readonly ILogger<GossipTopicBus> _log;

    public GossipTopicBus(GossipsubService gossip, ILogger<GossipTopicBus> log)
    {
        _gossip = gossip;
        _log = log;
    }

    public async ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct) =>
        await _gossip.PublishAsync(topic, data, ct);

    public IDisposable Subscribe(string topic, Func<TopicMessage, TopicVerdict> validator, Func<TopicMessage, CancellationToken, ValueTask> handler)
    {
        _gossip.SetValidator(topic, m => validator(ToTopicMessage(m)) switch
        {
            TopicVerdict.Accept => ValidationResult.Accept,
            TopicVerdict.Reject => ValidationResult.Reject,
            _ => ValidationResult.Ignore,
        });
        var subscription = _gossip.Subscribe(topic);
        return new Pump(this, topic, subscription, handler);
    }

    private static TopicMessage ToTopicMessage(GossipMessage m) => new(m.Topic, m.Data, m.Author, m.ReceivedFrom);

    private sealed class Pump : IDisposable
    {
        private readonly GossipTopicBus _bus;
        private readonly string _topic;
        private readonly GossipSubscription _subscription;
        private readonly CancellationTokenSource _stop = new();

        public Pump(GossipTopicBus bus, string topic, GossipSubscription subscription, Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            _bus = bus;
            _topic = topic;
            _subscription = subscription;
            _ = Task.Run(() => RunAsync(handler));
        }

        private async Task RunAsync(Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            try
            {
                await foreach (var m in _subscription.Messages.ReadAllAsync(_stop.Token))
                {
                    try
                    {
                        await handler(ToTopicMessage(m), _stop.Token);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception e)
                    {
                        LogHandlerFailed(_bus._log, _topic, e);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _subscription.Dispose();
            _bus._gossip.SetValidator(_topic, null);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Handler for topic {Topic} failed")]
    private static partial void LogHandlerFailed(ILogger logger, string topic, Exception error);
}
