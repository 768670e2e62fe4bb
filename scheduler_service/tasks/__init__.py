"""Task management behind scheduler_tool: validated inputs (``inputs``), the operations
(``manager.TaskManager``) and the JSON shapes they answer with (``views``)."""
