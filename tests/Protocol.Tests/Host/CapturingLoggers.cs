using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Potluck.Protocol.Tests.Host;

/// <summary>A logger factory that keeps every entry (level, category, message, exception, scopes) for assertions.</summary>
internal sealed class CapturingLoggers : ILoggerFactory
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();
    private readonly LoggerExternalScopeProvider _scopes = new();

    /// <summary>One log line; <see cref="Scopes"/> are the scopes it was written in, outermost first.</summary>
    public sealed record LogEntry(LogLevel Level, string Category, EventId Event, string Message, Exception? Exception, IReadOnlyList<string> Scopes);

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    public IEnumerable<LogEntry> AtOrAbove(LogLevel level) => _entries.Where(e => e.Level >= level);

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggers owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var scopes = new List<string>();
            owner._scopes.ForEachScope(static (scope, list) => list.Add(scope?.ToString() ?? ""), scopes);
            owner._entries.Enqueue(new LogEntry(logLevel, category, eventId, formatter(state, exception), exception, scopes));
        }
    }
}
